//! ZQL's tokens, each with the line and column where it starts.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// A keyword or a field name; keywords are matched case-insensitively.
    Word(String),
    /// A field name in backticks: never a keyword.
    Quoted(String),
    /// `@id`, `@namespace`, `@created_at`, `@updated_at`, `@score`.
    Meta(String),
    /// `$name`
    Param(String),
    Str(String),
    /// The number's text, exactly as written (JSON's grammar).
    Number(String),
    Symbol(&'static str),
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Word(w) => write!(f, "`{w}`"),
            Self::Quoted(q) => write!(f, "`{q}`"),
            Self::Meta(m) => write!(f, "`@{m}`"),
            Self::Param(p) => write!(f, "`${p}`"),
            Self::Str(_) => f.write_str("a string"),
            Self::Number(n) => write!(f, "`{n}`"),
            Self::Symbol(s) => write!(f, "`{s}`"),
            Self::End => f.write_str("the end of the query"),
        }
    }
}

/// Where a token starts: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A query that could not be read: where, and what was expected there.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub position: Position,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.message, self.position)
    }
}

const SYMBOLS: [&str; 18] = [
    "<=", ">=", "!=", "<>", "=", "<", ">", "(", ")", "[", "]", "{", "}", ",", ":", ".", "*", ";",
];

/// The longest query read (a guard on work, not on meaning).
pub const MAX_QUERY: usize = 64 * 1024;

pub fn tokens(text: &str) -> Result<Vec<(Token, Position)>, SyntaxError> {
    let error = |line, column, message: String| SyntaxError {
        position: Position { line, column },
        message,
    };
    // Measured before it is copied as characters (four bytes each).
    if text.len() > MAX_QUERY {
        return Err(error(
            1,
            1,
            format!("the query is longer than {MAX_QUERY} bytes"),
        ));
    }
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let (mut i, mut line, mut column) = (0usize, 1u32, 1u32);
    while i < chars.len() {
        let c = chars[i];
        let at = Position { line, column };
        let advance = |i: &mut usize, line: &mut u32, column: &mut u32, n: usize| {
            for k in 0..n {
                if chars[*i + k] == '\n' {
                    *line += 1;
                    *column = 1;
                } else {
                    *column += 1;
                }
            }
            *i += n;
        };
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut column, 1);
            continue;
        }
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            // A comment, to the end of the line.
            let mut n = 0;
            while i + n < chars.len() && chars[i + n] != '\n' {
                n += 1;
            }
            advance(&mut i, &mut line, &mut column, n);
            continue;
        }
        let word_len = |from: usize| {
            chars[from..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .count()
        };
        let token;
        let len;
        if c.is_ascii_alphabetic() || c == '_' {
            len = word_len(i);
            token = Token::Word(chars[i..i + len].iter().collect());
        } else if c == '@' || c == '$' {
            let n = word_len(i + 1);
            if n == 0 || chars[i + 1].is_ascii_digit() {
                return Err(error(line, column, format!("expected a name after `{c}`")));
            }
            let name: String = chars[i + 1..i + 1 + n].iter().collect();
            len = n + 1;
            token = if c == '@' {
                Token::Meta(name)
            } else {
                Token::Param(name)
            };
        } else if c == '`' {
            let n = chars[i + 1..].iter().take_while(|c| **c != '`').count();
            if i + 1 + n >= chars.len() {
                return Err(error(
                    line,
                    column,
                    "this field name is never closed".to_owned(),
                ));
            }
            len = n + 2;
            token = Token::Quoted(chars[i + 1..i + 1 + n].iter().collect());
        } else if c == '"' || c == '\'' {
            let (value, n) = string(&chars[i..]).map_err(|m| error(line, column, m))?;
            len = n;
            token = Token::Str(value);
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let n = number_len(&chars[i..]);
            let text: String = chars[i..i + n].iter().collect();
            if serde_json::from_str::<serde_json::Number>(&text).is_err() {
                return Err(error(line, column, format!("`{text}` is not a number")));
            }
            len = n;
            token = Token::Number(text);
        } else if let Some(symbol) = SYMBOLS.iter().find(|s| {
            s.chars()
                .enumerate()
                .all(|(k, sc)| chars.get(i + k) == Some(&sc))
        }) {
            len = symbol.chars().count();
            token = Token::Symbol(symbol);
        } else {
            return Err(error(line, column, format!("unexpected character `{c}`")));
        }
        out.push((token, at));
        advance(&mut i, &mut line, &mut column, len);
    }
    out.push((Token::End, Position { line, column }));
    Ok(out)
}

/// A quoted string (either quote; the quote doubled, or JSON's escapes
/// after a backslash) and how many characters it took.
fn string(chars: &[char]) -> Result<(String, usize), String> {
    let quote = chars[0];
    let mut value = String::new();
    let mut i = 1;
    loop {
        match chars.get(i) {
            None => return Err("this string is never closed".to_owned()),
            Some(&c) if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    value.push(quote);
                    i += 2;
                } else {
                    return Ok((value, i + 1));
                }
            }
            Some('\\') => {
                let escaped = match chars.get(i + 1) {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('\\') => '\\',
                    Some('/') => '/',
                    Some('"') => '"',
                    Some('\'') => '\'',
                    Some('b') => '\u{8}',
                    Some('f') => '\u{c}',
                    Some('u') => {
                        let (code, read) = unicode_escape(chars, i)?;
                        value.push(code);
                        i += read;
                        continue;
                    }
                    Some(other) => return Err(format!("unknown escape `\\{other}`")),
                    None => return Err("this string is never closed".to_owned()),
                };
                value.push(escaped);
                i += 2;
            }
            Some(&c) => {
                value.push(c);
                i += 1;
            }
        }
    }
}

/// The character of the `\uXXXX` escape at `chars[at]` (a UTF-16
/// surrogate pair written as two, as JSON writes characters past U+FFFF),
/// and how many characters it took.
fn unicode_escape(chars: &[char], at: usize) -> Result<(char, usize), String> {
    let unit = |from: usize| -> Option<u32> {
        let hex: String = chars.iter().skip(from).take(4).collect();
        (hex.len() == 4 && hex.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(&hex, 16).ok())
            .flatten()
    };
    let written = |from: usize| chars.iter().skip(from).take(6).collect::<String>();
    let first = unit(at + 2).ok_or_else(|| format!("`{}` is not a character", written(at)))?;
    if (0xD800..0xDC00).contains(&first) {
        let low = (chars.get(at + 6) == Some(&'\\') && chars.get(at + 7) == Some(&'u'))
            .then(|| unit(at + 8))
            .flatten()
            .filter(|low| (0xDC00..0xE000).contains(low))
            .ok_or_else(|| {
                format!(
                    "`{}` begins a surrogate pair; its second half (`\\udc00`-`\\udfff`) must follow",
                    written(at)
                )
            })?;
        let code = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00);
        return char::from_u32(code)
            .map(|c| (c, 12))
            .ok_or_else(|| format!("`{}` is not a character", written(at)));
    }
    char::from_u32(first)
        .map(|c| (c, 6))
        .ok_or_else(|| format!("`{}` is not a character", written(at)))
}

fn number_len(chars: &[char]) -> usize {
    let mut n = usize::from(chars[0] == '-');
    let digits = |from: usize| {
        chars[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    n += digits(n);
    if chars.get(n) == Some(&'.') && chars.get(n + 1).is_some_and(char::is_ascii_digit) {
        n += 1 + digits(n + 1);
    }
    if matches!(chars.get(n), Some('e' | 'E')) {
        let sign = usize::from(matches!(chars.get(n + 1), Some('+' | '-')));
        if chars.get(n + 1 + sign).is_some_and(char::is_ascii_digit) {
            n += 1 + sign + digits(n + 1 + sign);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_positions() {
        let read =
            tokens("FIND IN books\n  WHERE price >= -1.5e2 -- cheap\n AND @id != $x").unwrap();
        let words: Vec<String> = read.iter().map(|(t, _)| t.to_string()).collect();
        assert_eq!(
            words,
            [
                "`FIND`",
                "`IN`",
                "`books`",
                "`WHERE`",
                "`price`",
                "`>=`",
                "`-1.5e2`",
                "`AND`",
                "`@id`",
                "`!=`",
                "`$x`",
                "the end of the query"
            ]
        );
        assert_eq!(read[3].1, Position { line: 2, column: 3 });
        assert_eq!(read[7].1, Position { line: 3, column: 2 });
    }

    #[test]
    fn strings_take_either_quote_and_escapes() {
        let read = tokens(r#"'it''s' "a\"b\u00e9""#).unwrap();
        assert_eq!(read[0].0, Token::Str("it's".into()));
        assert_eq!(read[1].0, Token::Str("a\"bé".into()));
        let open = tokens("FIND WHERE a = 'x").unwrap_err();
        assert_eq!(
            open.position,
            Position {
                line: 1,
                column: 16
            }
        );
        assert!(tokens("a # b").unwrap_err().message.contains("`#`"));
    }

    #[test]
    fn strings_take_all_of_jsons_escapes() {
        let read = tokens(r#""\b\f" "\ud83d\ude00!" "\u00E9" after"#).unwrap();
        assert_eq!(read[0].0, Token::Str("\u{8}\u{c}".into()));
        assert_eq!(read[1].0, Token::Str("😀!".into()));
        assert_eq!(read[2].0, Token::Str("é".into()));
        assert_eq!(
            read[3].1,
            Position {
                line: 1,
                column: 33
            }
        );
        for (bad, says) in [
            (r#""\ud83d""#, "surrogate pair"),
            (r#""\ud83dx\ude00""#, "surrogate pair"),
            (r#""\ud83d\u0041""#, "surrogate pair"),
            (r#""\ude00""#, "not a character"),
            (r#""\u+041""#, "not a character"),
            (r#""\u12""#, "not a character"),
        ] {
            let error = tokens(bad).unwrap_err().message;
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn a_long_query_is_refused_by_its_length() {
        let long = "a".repeat(MAX_QUERY + 1);
        assert!(tokens(&long).unwrap_err().message.contains("longer than"));
    }
}
