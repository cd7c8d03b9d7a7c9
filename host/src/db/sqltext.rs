//! Reading SQL text the way Postgres's lexer does, just far enough to split
//! statements, find `$n` placeholders and name each statement's command.
//!
//! Statements run over the simple query protocol, so results come back in
//! Postgres's own text forms for every type, and several statements can share
//! one round trip and one transaction. Parameters are therefore rendered as
//! literals here: each `$n` outside quotes, comments and dollar-quoted bodies
//! becomes an escape-string literal `E'...'` whose only specials (`\` and
//! `'`) are doubled, which reads the same whatever `standard_conforming_strings`
//! says. The literal is untyped, so Postgres gives it the parameter's type
//! from context exactly as it does for a prepared statement's `$n`.

use std::fmt::Write as _;

/// One statement of a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    pub text: &'a str,
    /// Byte offset of `text` in the whole query string.
    pub start: usize,
    /// The first keyword, upper case (`SELECT`, `INSERT`, ...), if any.
    pub command: Option<String>,
    /// The second keyword, upper case, if any (`ROLLBACK TO`, say).
    pub second: Option<String>,
    /// Byte ranges of `$n` placeholders in `text`, with their `n`.
    pub params: Vec<(std::ops::Range<usize>, usize)>,
    /// Whether it holds a `BEGIN ATOMIC` routine body: semicolons the host
    /// read as inside it, which Postgres must be asked to confirm (see
    /// [`split`]).
    pub routine_body: bool,
}

/// Why a query string cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LexError {
    Unterminated(&'static str),
    BadParameter(String),
}

impl std::fmt::Display for LexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LexError::Unterminated(what) => write!(f, "unterminated {what}"),
            LexError::BadParameter(p) => write!(f, "invalid parameter reference `{p}`"),
        }
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Splits `sql` into its non-empty statements.
pub fn split(sql: &str) -> Result<Vec<Statement<'_>>, LexError> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut words: Vec<String> = Vec::new();
    let mut params = Vec::new();
    // A `BEGIN ATOMIC ... END` body of CREATE FUNCTION or PROCEDURE holds
    // semicolons that do not end the statement. Everything the host lets
    // through or refuses rests on this split, so it reads the body as
    // Postgres's grammar does: it opens only on the tokens `BEGIN ATOMIC`,
    // nothing but whitespace and comments between them, outside parentheses
    // in a routine's definition (words apart, such as `SET search_path =
    // begin, atomic`, are names), and it closes at the `END` that begins one
    // of its statements (the body is a list of `statement ;` closed by
    // `END`; no statement begins with END, and every other END, of a CASE,
    // comes inside one). Counting CASE and END instead was wrong: `case` is
    // also a column label (`SELECT 1 AS case`), which opens nothing, so the
    // count outlived the body and a COMMIT after it went through unsplit.
    //
    // Nor does a semicolon inside parentheses end a statement (as in psql):
    // Postgres parses the whole query string before it runs any of it, and
    // its grammar takes a semicolon inside parentheses only between the
    // actions of `CREATE RULE ... DO (a; b)`, which are plain reads, writes
    // and NOTIFYs; anywhere else the string is a syntax error and nothing
    // runs.
    //
    // Twice now a body was read where Postgres read none, so the split is
    // not trusted alone: a statement with a body is marked
    // (`routine_body`), and the host has Postgres parse it alone before
    // running anything (`exec`), which fails if Postgres reads more than
    // one statement there.
    let mut body = false;
    // Whether the statement under way holds a body.
    let mut routine_body = false;
    // Whether the last token was the word BEGIN.
    let mut after_begin = false;
    // In a body: whether the next token begins one of its statements.
    let mut body_statement = false;
    let mut parens = 0usize;

    while i < bytes.len() {
        let b = bytes[i];
        // Any token but this one's kind clears it; comments and whitespace
        // put it back.
        let was_body_statement = std::mem::take(&mut body_statement);
        let was_after_begin = std::mem::take(&mut after_begin);
        match b {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = comment_end(bytes, i);
                body_statement = was_body_statement;
                after_begin = was_after_begin;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                body_statement = was_body_statement;
                after_begin = was_after_begin;
                // Block comments nest in Postgres.
                let mut level = 0;
                loop {
                    if i >= bytes.len() {
                        return Err(LexError::Unterminated("block comment"));
                    }
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        level += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        level -= 1;
                        i += 2;
                        if level == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => i = skip_quoted(bytes, i, false)?,
            b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(LexError::Unterminated("quoted identifier")),
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                words.push(String::new());
            }
            b'$' => {
                let rest = &bytes[i + 1..];
                if rest.first().is_some_and(u8::is_ascii_digit) {
                    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
                    let end = i + 1 + digits;
                    if bytes.get(end).is_some_and(|c| is_ident_char(*c)) {
                        // Up to the end of the character that follows.
                        let past = (end + 1..=sql.len())
                            .find(|&k| sql.is_char_boundary(k))
                            .unwrap_or(sql.len());
                        return Err(LexError::BadParameter(sql[i..past].to_owned()));
                    }
                    let n: usize = sql[i + 1..end]
                        .parse()
                        .ok()
                        .filter(|n| (1..=65535).contains(n))
                        .ok_or_else(|| LexError::BadParameter(sql[i..end].to_owned()))?;
                    params.push((i..end, n));
                    i = end;
                } else if let Some(tag_len) = dollar_tag(rest) {
                    let tag = &sql[i..i + tag_len + 2];
                    let body = i + tag.len();
                    let close = sql[body..]
                        .find(tag)
                        .ok_or(LexError::Unterminated("dollar-quoted string"))?;
                    i = body + close + tag.len();
                    words.push(String::new());
                } else {
                    i += 1;
                }
            }
            b';' if body && parens == 0 => {
                body_statement = true;
                i += 1;
            }
            b';' if parens == 0 => {
                let had_body = std::mem::take(&mut routine_body);
                finish(
                    sql,
                    start,
                    i,
                    had_body,
                    &mut words,
                    &mut params,
                    &mut statements,
                );
                i += 1;
                start = i;
            }
            b'(' => {
                parens += 1;
                i += 1;
            }
            b')' => {
                parens = parens.saturating_sub(1);
                i += 1;
            }
            _ if is_ident_start(b) => {
                let end = i + bytes[i..].iter().take_while(|c| is_ident_char(**c)).count();
                let word = &sql[i..end];
                // E'...' (backslash escapes), U&'...', B'...', X'...', N'...'
                if bytes.get(end) == Some(&b'\'') && word.len() == 1 {
                    i = skip_quoted(bytes, end, word.eq_ignore_ascii_case("e"))?;
                    words.push(String::new());
                    continue;
                }
                if word.eq_ignore_ascii_case("u")
                    && bytes.get(end) == Some(&b'&')
                    && matches!(bytes.get(end + 1), Some(b'\'') | Some(b'"'))
                {
                    i = end + 1;
                    continue;
                }
                let upper = word.to_ascii_uppercase();
                if body {
                    body = !(was_body_statement && upper == "END");
                } else if upper == "ATOMIC"
                    && parens == 0
                    && was_after_begin
                    && defines_routine(&words)
                {
                    body = true;
                    body_statement = true;
                    routine_body = true;
                }
                after_begin = upper == "BEGIN";
                words.push(upper);
                i = end;
            }
            // Postgres's whitespace: space, \t, \n, \r, \f and \v.
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x0b => {
                body_statement = was_body_statement;
                after_begin = was_after_begin;
                i += 1;
            }
            _ => i += 1,
        }
    }
    finish(
        sql,
        start,
        bytes.len(),
        routine_body,
        &mut words,
        &mut params,
        &mut statements,
    );
    Ok(statements)
}

/// Whether a statement's first words are `CREATE [OR REPLACE] FUNCTION` or
/// `PROCEDURE`.
fn defines_routine(words: &[String]) -> bool {
    let rest = match words {
        [create, or, replace, rest @ ..]
            if create == "CREATE" && or == "OR" && replace == "REPLACE" =>
        {
            rest
        }
        [create, rest @ ..] if create == "CREATE" => rest,
        _ => return false,
    };
    rest.first()
        .is_some_and(|w| w == "FUNCTION" || w == "PROCEDURE")
}

type Params = Vec<(std::ops::Range<usize>, usize)>;

/// Closes the statement `sql[start..end]`, if it holds anything.
fn finish<'a>(
    sql: &'a str,
    start: usize,
    end: usize,
    routine_body: bool,
    words: &mut Vec<String>,
    params: &mut Params,
    statements: &mut Vec<Statement<'a>>,
) {
    if !words.is_empty() || !params.is_empty() {
        statements.push(Statement {
            text: &sql[start..end],
            start,
            command: words.first().cloned(),
            second: words.get(1).cloned(),
            params: params
                .drain(..)
                .map(|(r, n)| (r.start - start..r.end - start, n))
                .collect(),
            routine_body,
        });
    }
    words.clear();
    params.clear();
}

/// The length of a dollar-quote tag's name (`$tag$` → 3, `$$` → 0).
fn dollar_tag(rest: &[u8]) -> Option<usize> {
    if rest.first() == Some(&b'$') {
        return Some(0);
    }
    if !rest.first().is_some_and(|c| is_ident_start(*c)) {
        return None;
    }
    let len = rest
        .iter()
        .take_while(|c| is_ident_start(**c) || c.is_ascii_digit())
        .count();
    (rest.get(len) == Some(&b'$')).then_some(len)
}

/// The end of a `--` comment starting at `i`: Postgres ends one at a
/// carriage return as at a line feed.
fn comment_end(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|b| matches!(b, b'\n' | b'\r'))
        .map_or(bytes.len(), |n| i + n)
}

/// Skips a `'...'` literal starting at `i`; returns the index after it.
fn skip_quoted(bytes: &[u8], i: usize, backslash_escapes: bool) -> Result<usize, LexError> {
    let mut i = i + 1;
    loop {
        match bytes.get(i) {
            None => return Err(LexError::Unterminated("quoted string")),
            Some(b'\\') if backslash_escapes => i += 2,
            Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            Some(b'\'') => match continued(bytes, i + 1) {
                // The same literal goes on, read as it was (an `E'...'`
                // one with its escapes).
                Some(quote) => i = quote + 1,
                None => return Ok(i + 1),
            },
            Some(_) => i += 1,
        }
    }
}

/// Where a literal closed just before `i` goes on, if it does: Postgres
/// reads `'a'` then whitespace holding a line break (and `--` comments)
/// then `'b'` as the one literal `'ab'`.
fn continued(bytes: &[u8], mut i: usize) -> Option<usize> {
    let mut line_break = false;
    loop {
        match *bytes.get(i)? {
            b'\n' | b'\r' => {
                line_break = true;
                i += 1;
            }
            b' ' | b'\t' | b'\x0b' | b'\x0c' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => i = comment_end(bytes, i),
            b'\'' if line_break => return Some(i),
            _ => return None,
        }
    }
}

/// Quotes `text` as an escape-string literal, or refuses a NUL (Postgres
/// text cannot hold one).
pub fn quote_literal(text: &str) -> Result<String, &'static str> {
    if text.contains('\0') {
        return Err("text parameters cannot contain NUL characters");
    }
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// A parameter substitution in a query string, for mapping Postgres's error
/// positions back to the text the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Substitution {
    /// Character offset of the `$n` in the original text.
    pub original_start: usize,
    /// Characters of the `$n`.
    pub original_len: usize,
    /// Characters of the literal that replaced it.
    pub literal_len: usize,
}

/// `sql` with every `$n` of its statements replaced by `literals[n - 1]`,
/// and the substitutions made, in order.
pub fn interpolate(
    sql: &str,
    statements: &[Statement<'_>],
    literals: &[String],
) -> (String, Vec<Substitution>) {
    let mut out =
        String::with_capacity(sql.len() + literals.iter().map(String::len).sum::<usize>());
    let mut substitutions = Vec::new();
    let mut last = 0;
    let mut chars_before = 0;
    for statement in statements {
        for (range, n) in &statement.params {
            let start = statement.start + range.start;
            let end = statement.start + range.end;
            out.push_str(&sql[last..start]);
            chars_before += sql[last..start].chars().count();
            let literal = &literals[n - 1];
            // An empty comment after the literal, so that a literal of the
            // client's after a line break never continues it (see
            // `continued`): the split above read that one on its own.
            let guard = if literal.ends_with('\'') { "/**/" } else { "" };
            let _ = write!(out, "{literal}{guard}");
            substitutions.push(Substitution {
                original_start: chars_before,
                original_len: end - start,
                literal_len: literal.chars().count() + guard.len(),
            });
            chars_before += end - start;
            last = end;
        }
    }
    out.push_str(&sql[last..]);
    (out, substitutions)
}

/// Maps a 0-based character offset in the interpolated text back to the
/// original; an offset inside a literal maps to its `$n`.
pub fn original_offset(offset: usize, substitutions: &[Substitution]) -> usize {
    let mut shift: isize = 0;
    for s in substitutions {
        let sent_start = (s.original_start as isize + shift) as usize;
        if offset < sent_start {
            break;
        }
        if offset < sent_start + s.literal_len {
            return s.original_start;
        }
        shift += s.literal_len as isize - s.original_len as isize;
    }
    (offset as isize - shift).max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(sql: &str) -> Vec<String> {
        split(sql)
            .unwrap()
            .into_iter()
            .map(|s| s.command.unwrap_or_default())
            .collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        assert_eq!(
            commands("select 1; insert into t values (';')"),
            ["SELECT", "INSERT"]
        );
        assert_eq!(
            commands("select ';' -- ; comment\n; select 2"),
            ["SELECT", "SELECT"]
        );
        assert_eq!(commands("select /* ; /* nested ; */ */ 1"), ["SELECT"]);
        assert_eq!(commands("select $$ ; $$, $tag$ $$ ; $tag$"), ["SELECT"]);
        assert_eq!(commands(r#"select "a;b" from t"#), ["SELECT"]);
        assert_eq!(
            commands("select E'\\'; still' ; select 2"),
            ["SELECT", "SELECT"]
        );
        assert_eq!(commands(" ; ;; "), Vec::<String>::new());
        // A rule's actions are one statement, as Postgres reads them.
        assert_eq!(
            commands(
                "create rule r as on insert to t do also (insert into a values (1); \
                 notify c; select ';'); select 2"
            ),
            ["CREATE", "SELECT"]
        );
        // A stray `)` opens nothing: what follows still splits.
        assert_eq!(commands("select 1); commit"), ["SELECT", "COMMIT"]);
    }

    #[test]
    fn sql_function_bodies_keep_their_semicolons() {
        let sql = "create function f() returns int language sql begin atomic select 1; select 2; end; select f()";
        assert_eq!(commands(sql), ["CREATE", "SELECT"]);
        let sql = "CREATE OR REPLACE PROCEDURE p(x int) LANGUAGE sql BEGIN ATOMIC \
                   SELECT CASE WHEN x > 0 THEN 1 ELSE (CASE x WHEN 0 THEN 0 END) END; \
                   SELECT begin FROM t; END; COMMIT";
        assert_eq!(commands(sql), ["CREATE", "COMMIT"]);
    }

    #[test]
    fn statements_with_a_body_are_marked() {
        let marked = |sql: &str| -> Vec<bool> {
            split(sql).unwrap().iter().map(|s| s.routine_body).collect()
        };
        assert_eq!(
            marked(
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN /* c */ ATOMIC SELECT 1; END; \
                 SELECT 1; CREATE FUNCTION g() RETURNS int LANGUAGE sql RETURN 1"
            ),
            [true, false, false]
        );
    }

    #[test]
    fn a_bad_parameter_is_named_whatever_follows_it() {
        assert_eq!(
            split("SELECT $1é").unwrap_err(),
            LexError::BadParameter("$1é".to_owned())
        );
    }

    #[test]
    fn no_other_begin_hides_what_follows() {
        // Each of these once read as one CREATE statement, so the COMMIT
        // (or BEGIN) behind it reached Postgres unrefused.
        for sql in [
            "CREATE TEMP TABLE z (begin int); COMMIT; INSERT INTO t VALUES (1)",
            "CREATE TABLE z AS SELECT 1 AS begin; COMMIT",
            "create view v as select case when true then 1 end as c, 1 as begin; commit",
            "CREATE FUNCTION f(begin atomic) RETURNS int LANGUAGE sql RETURN 1; COMMIT",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT begin FROM t; END; BEGIN",
            // `case` as a column label opens no CASE expression.
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS case; END; COMMIT",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 case; END; COMMIT",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT t.case FROM t; END; COMMIT",
            // A vertical tab is Postgres's whitespace too.
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1;\x0bEND; COMMIT",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC\x0bEND; COMMIT",
            // BEGIN and ATOMIC apart are names, not a body.
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = begin, atomic \
             RETURN 1; COMMIT; SELECT current_user",
            "CREATE FUNCTION f() RETURNS begin.atomic%TYPE LANGUAGE sql RETURN 1; COMMIT",
            "CREATE PROCEDURE p() LANGUAGE sql SET search_path TO begin, atomic \
             BEGIN ATOMIC SELECT 1; END; COMMIT",
        ] {
            let commands = commands(sql);
            assert!(
                commands.iter().any(|c| c == "COMMIT" || c == "BEGIN"),
                "{sql}: {commands:?}"
            );
        }
    }

    #[test]
    fn finds_parameters_outside_quotes_and_comments() {
        let statements = split("select $1, '$2', \"$3\", $$ $4 $$ /* $5 */ -- $6\n, $2").unwrap();
        let ns: Vec<usize> = statements[0].params.iter().map(|(_, n)| *n).collect();
        assert_eq!(ns, [1, 2]);
        let s = &statements[0];
        assert_eq!(&s.text[s.params[1].0.clone()], "$2");
    }

    #[test]
    fn identifiers_may_contain_dollar_signs() {
        let statements = split("select a$1 from t$x").unwrap();
        assert!(statements[0].params.is_empty());
    }

    #[test]
    fn rejects_bad_parameters_and_unterminated_text() {
        assert!(matches!(
            split("select $1a"),
            Err(LexError::BadParameter(_))
        ));
        assert!(matches!(split("select $0"), Err(LexError::BadParameter(_))));
        assert!(matches!(
            split("select 'abc"),
            Err(LexError::Unterminated(_))
        ));
        assert!(matches!(
            split("select $q$ abc"),
            Err(LexError::Unterminated(_))
        ));
        assert!(matches!(
            split("select /* abc"),
            Err(LexError::Unterminated(_))
        ));
    }

    #[test]
    fn quoting_doubles_quotes_and_backslashes() {
        assert_eq!(quote_literal("it's").unwrap(), "E'it''s'");
        assert_eq!(quote_literal(r"a\'; drop").unwrap(), r"E'a\\''; drop'");
        assert!(quote_literal("a\0b").is_err());
    }

    #[test]
    fn interpolation_replaces_each_placeholder() {
        let sql = "select $2 - $1, $1 -- end";
        let statements = split(sql).unwrap();
        let (out, subs) = interpolate(sql, &statements, &["E'-5'".into(), "E'10'".into()]);
        assert_eq!(out, "select E'10'/**/ - E'-5'/**/, E'-5'/**/ -- end");
        // `-` after the first literal sits at 17 in the output, 10 in the input.
        assert_eq!(original_offset(17, &subs), 10);
        // Inside the second literal (its guard too): its `$1`.
        assert_eq!(original_offset(20, &subs), 12);
        assert_eq!(original_offset(27, &subs), 12);
        assert_eq!(original_offset(2, &subs), 2);
    }

    #[test]
    fn a_line_comment_ends_at_a_carriage_return_too() {
        // Postgres runs the COMMIT: so must the split see it.
        assert_eq!(
            commands("SELECT 1 -- x\r; COMMIT; INSERT INTO t VALUES (1)\n"),
            ["SELECT", "COMMIT", "INSERT"]
        );
        assert_eq!(
            commands("SELECT 1 -- x\rAS c; INSERT INTO t VALUES (1)"),
            ["SELECT", "INSERT"]
        );
        assert_eq!(
            commands("SELECT 1 -- x\r\n; SELECT 2"),
            ["SELECT", "SELECT"]
        );
    }

    #[test]
    fn a_literal_continued_on_the_next_line_is_one_literal() {
        // `E'x'` continued by `'\''`: the escaped quote does not end it, so
        // Postgres sees a COMMIT after it, and so must the split.
        let sql = "SELECT E'x'\n'\\'' ; COMMIT ; INSERT INTO t VALUES (9) --'";
        assert_eq!(commands(sql), ["SELECT", "COMMIT", "INSERT"]);
        // Across a comment and any line break; not on one line.
        assert_eq!(
            commands("SELECT 'a' -- c\r\n  'b;' ; SELECT 2"),
            ["SELECT", "SELECT"]
        );
        assert_eq!(commands("SELECT 'a'\t'b' ; SELECT 2"), ["SELECT", "SELECT"]);
        assert_eq!(split("SELECT 'a'\n'b'").unwrap()[0].text, "SELECT 'a'\n'b'");
        assert!(split("SELECT E'a'\n'\\'").is_err());
    }

    #[test]
    fn a_parameters_literal_is_never_continued_by_the_clients() {
        // Split, `$1` and the client's `'\''` are apart; interpolated bare,
        // `E'v'` then a line break then `'\''` would be one E-string.
        let sql = "SELECT $1\n'\\'' ; COMMIT ; INSERT INTO t VALUES (9) --'";
        let statements = split(sql).unwrap();
        assert_eq!(statements.len(), 1);
        let (out, _) = interpolate(sql, &statements, &["E'v'".into()]);
        assert_eq!(commands(&out), ["SELECT"]);
        assert!(out.starts_with("SELECT E'v'/**/\n"), "{out}");
    }

    #[test]
    fn second_keyword_is_reported() {
        let statements = split("rollback to savepoint a").unwrap();
        assert_eq!(statements[0].second.as_deref(), Some("TO"));
    }
}
