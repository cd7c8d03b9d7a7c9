//! ZQL's syntax tree and its recursive-descent parser (grammar: docs/zql.md).

use crate::lexer::{Position, SyntaxError, Token, tokens};

/// One statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Find(Find),
    Count {
        namespace: Option<Value>,
        filter: Option<Condition>,
    },
    Aggregate {
        aggregates: Vec<Aggregate>,
        namespace: Option<Value>,
        filter: Option<Condition>,
        group_by: Option<Vec<Step>>,
    },
    Get {
        id: Value,
    },
    Insert {
        namespace: Option<Value>,
        data: Value,
        vector: Option<Value>,
        id: Option<Value>,
        /// Acknowledged before it is on disk, until a flush.
        buffered: bool,
    },
    Update {
        namespace: Option<Value>,
        set: Vec<(Vec<Step>, Value)>,
        target: Target,
    },
    Delete {
        namespace: Option<Value>,
        target: Target,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Find {
    pub namespace: Option<Value>,
    pub filter: Option<Condition>,
    pub near: Option<Near>,
    pub order: Vec<(Field, Direction)>,
    pub limit: Option<Value>,
    pub offset: Option<Value>,
}

/// `NEAR <vector> [USING <metric>] TOP <k>`
#[derive(Debug, Clone, PartialEq)]
pub struct Near {
    pub vector: Value,
    pub metric: Metric,
    pub top: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    #[default]
    L2,
    Cosine,
    InnerProduct,
}

impl Metric {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "l2" => Some(Self::L2),
            "cosine" => Some(Self::Cosine),
            "inner_product" => Some(Self::InnerProduct),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

/// What a write applies to: one record, or every record a filter keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Id(Value),
    Filter(Condition),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub function: Function,
    /// `None` for `COUNT(*)`.
    pub field: Option<Vec<Step>>,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// A step of a path into a record's data: a key or an array index.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Key(String),
    Index(i64),
}

/// A record's metadata, written with `@`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Id,
    Namespace,
    CreatedAt,
    UpdatedAt,
    /// The distance of a `NEAR` search (ordering only).
    Score,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Data(Vec<Step>),
    Meta(Meta),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
    Compare(Field, Compare, Value),
    In(Field, Vec<Value>),
    Between(Field, Value, Value),
    Exists(Field),
}

/// A value as written: JSON, with named parameters anywhere in it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Json(serde_json::Value),
    Param(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

/// Parses one statement.
pub fn statement(text: &str) -> Result<Statement, SyntaxError> {
    let mut parser = Parser::new(text)?;
    let statement = parser.statement()?;
    parser.end()?;
    Ok(statement)
}

/// Parses a condition alone (the `filter` of `/api/zql/search`).
pub fn condition(text: &str) -> Result<Condition, SyntaxError> {
    let mut parser = Parser::new(text)?;
    let condition = parser.condition()?;
    parser.end()?;
    Ok(condition)
}

/// How deeply conditions and values may nest (a guard on the stack).
const MAX_DEPTH: u32 = 64;
/// The most tests (comparisons, `IN`, `BETWEEN`, `EXISTS`) in one query:
/// a chain of `AND`/`OR` is a tree as deep as it is long.
const MAX_TESTS: u32 = 256;

struct Parser {
    tokens: Vec<(Token, Position)>,
    at: usize,
    depth: u32,
    /// Tests read so far, against [`MAX_TESTS`].
    tests: u32,
    /// Whether the last `next` moved (it stays on the end).
    advanced: bool,
}

impl Parser {
    fn new(text: &str) -> Result<Self, SyntaxError> {
        Ok(Self {
            tokens: tokens(text)?,
            at: 0,
            depth: 0,
            tests: 0,
            advanced: false,
        })
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.at].0
    }

    fn position(&self) -> Position {
        self.tokens[self.at].1
    }

    fn next(&mut self) -> Token {
        let token = self.tokens[self.at].0.clone();
        self.advanced = self.at + 1 < self.tokens.len();
        if self.advanced {
            self.at += 1;
        }
        token
    }

    /// Steps back over the token just read (the end is never stepped over).
    fn unread(&mut self) {
        if self.advanced {
            self.at -= 1;
        }
    }

    fn error<T>(&self, expected: &str) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            position: self.position(),
            message: format!("expected {expected}, found {}", self.peek()),
        })
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.is_keyword(keyword);
        if found {
            self.next();
        }
        found
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), SyntaxError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            self.error(&format!("`{keyword}`"))
        }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.peek(), Token::Symbol(s) if *s == symbol);
        if found {
            self.next();
        }
        found
    }

    fn symbol(&mut self, symbol: &str) -> Result<(), SyntaxError> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            self.error(&format!("`{symbol}`"))
        }
    }

    fn end(&mut self) -> Result<(), SyntaxError> {
        self.eat_symbol(";");
        match self.peek() {
            Token::End => Ok(()),
            _ => self.error("the end of the query"),
        }
    }

    fn deeper(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SyntaxError {
                position: self.position(),
                message: format!("the query nests deeper than {MAX_DEPTH} levels"),
            });
        }
        Ok(())
    }

    fn statement(&mut self) -> Result<Statement, SyntaxError> {
        let Token::Word(word) = self.peek().clone() else {
            return self.error("FIND, COUNT, AGGREGATE, GET, INSERT, UPDATE or DELETE");
        };
        match word.to_ascii_uppercase().as_str() {
            "FIND" => {
                self.next();
                self.find().map(Statement::Find)
            }
            "COUNT" => {
                self.next();
                let namespace = self.namespace()?;
                let filter = self.filter()?;
                Ok(Statement::Count { namespace, filter })
            }
            "AGGREGATE" => {
                self.next();
                self.aggregate()
            }
            "GET" => {
                self.next();
                Ok(Statement::Get { id: self.value()? })
            }
            "INSERT" => {
                self.next();
                let namespace = if self.eat_keyword("INTO") {
                    Some(self.name()?)
                } else {
                    None
                };
                if !matches!(self.peek(), Token::Symbol("{") | Token::Param(_)) {
                    return self.error("the record's data, a `{...}` object or a parameter");
                }
                let data = self.value()?;
                let (mut vector, mut id, mut buffered) = (None, None, false);
                loop {
                    if vector.is_none() && self.eat_keyword("VECTOR") {
                        vector = Some(self.value()?);
                    } else if id.is_none() && self.eat_keyword("ID") {
                        id = Some(self.value()?);
                    } else if !buffered && self.eat_keyword("BUFFERED") {
                        buffered = true;
                    } else {
                        break;
                    }
                }
                Ok(Statement::Insert {
                    namespace,
                    data,
                    vector,
                    id,
                    buffered,
                })
            }
            "UPDATE" => {
                self.next();
                let namespace = self.namespace()?;
                self.keyword("SET")?;
                let mut set = Vec::new();
                loop {
                    let Field::Data(path) = self.field()? else {
                        return Err(SyntaxError {
                            position: self.tokens[self.at.saturating_sub(1)].1,
                            message: "only data fields can be set, not `@` fields".to_owned(),
                        });
                    };
                    self.symbol("=")?;
                    set.push((path, self.value()?));
                    if !self.eat_symbol(",") {
                        break;
                    }
                }
                let target = self.target()?;
                Ok(Statement::Update {
                    namespace,
                    set,
                    target,
                })
            }
            "DELETE" => {
                self.next();
                let namespace = self.namespace()?;
                let target = self.target()?;
                Ok(Statement::Delete { namespace, target })
            }
            _ => self.error("FIND, COUNT, AGGREGATE, GET, INSERT, UPDATE or DELETE"),
        }
    }

    /// `ID <value>` or `WHERE <condition>`.
    fn target(&mut self) -> Result<Target, SyntaxError> {
        if self.eat_keyword("ID") {
            Ok(Target::Id(self.value()?))
        } else if self.eat_keyword("WHERE") {
            Ok(Target::Filter(self.condition()?))
        } else {
            self.error("`ID` or `WHERE`")
        }
    }

    fn namespace(&mut self) -> Result<Option<Value>, SyntaxError> {
        if self.eat_keyword("IN") {
            Ok(Some(self.name()?))
        } else {
            Ok(None)
        }
    }

    /// A namespace: a bare name, a string or a parameter.
    fn name(&mut self) -> Result<Value, SyntaxError> {
        match self.peek().clone() {
            Token::Word(w) | Token::Quoted(w) => {
                self.next();
                Ok(Value::Json(serde_json::Value::String(w)))
            }
            Token::Str(s) => {
                self.next();
                Ok(Value::Json(serde_json::Value::String(s)))
            }
            Token::Param(p) => {
                self.next();
                Ok(Value::Param(p))
            }
            _ => self.error("a namespace"),
        }
    }

    fn filter(&mut self) -> Result<Option<Condition>, SyntaxError> {
        if self.eat_keyword("WHERE") {
            Ok(Some(self.condition()?))
        } else {
            Ok(None)
        }
    }

    fn find(&mut self) -> Result<Find, SyntaxError> {
        let namespace = self.namespace()?;
        let filter = self.filter()?;
        let near = if self.eat_keyword("NEAR") {
            let vector = self.value()?;
            let metric = if self.eat_keyword("USING") {
                let at = self.position();
                match self.next() {
                    Token::Word(w) => Metric::parse(&w).ok_or_else(|| SyntaxError {
                        position: at,
                        message: format!(
                            "expected a metric (l2, cosine or inner_product), found `{w}`"
                        ),
                    })?,
                    other => {
                        return Err(SyntaxError {
                            position: at,
                            message: format!(
                                "expected a metric (l2, cosine or inner_product), found {other}"
                            ),
                        });
                    }
                }
            } else {
                Metric::default()
            };
            self.keyword("TOP")?;
            Some(Near {
                vector,
                metric,
                top: self.value()?,
            })
        } else {
            None
        };
        let mut order = Vec::new();
        if self.eat_keyword("ORDER") {
            self.keyword("BY")?;
            loop {
                let field = self.field()?;
                let direction = if self.eat_keyword("DESC") {
                    Direction::Desc
                } else {
                    self.eat_keyword("ASC");
                    Direction::Asc
                };
                order.push((field, direction));
                if !self.eat_symbol(",") {
                    break;
                }
            }
        }
        let limit = if self.eat_keyword("LIMIT") {
            Some(self.value()?)
        } else {
            None
        };
        let offset = if self.eat_keyword("OFFSET") {
            Some(self.value()?)
        } else {
            None
        };
        Ok(Find {
            namespace,
            filter,
            near,
            order,
            limit,
            offset,
        })
    }

    fn aggregate(&mut self) -> Result<Statement, SyntaxError> {
        let mut aggregates = Vec::new();
        loop {
            let at = self.position();
            let function = match self.next() {
                Token::Word(w) => match w.to_ascii_uppercase().as_str() {
                    "COUNT" => Function::Count,
                    "SUM" => Function::Sum,
                    "AVG" => Function::Avg,
                    "MIN" => Function::Min,
                    "MAX" => Function::Max,
                    _ => {
                        return Err(SyntaxError {
                            position: at,
                            message: format!("expected COUNT, SUM, AVG, MIN or MAX, found `{w}`"),
                        });
                    }
                },
                other => {
                    return Err(SyntaxError {
                        position: at,
                        message: format!("expected COUNT, SUM, AVG, MIN or MAX, found {other}"),
                    });
                }
            };
            self.symbol("(")?;
            let field = if function == Function::Count && self.eat_symbol("*") {
                None
            } else {
                match self.field()? {
                    Field::Data(path) => Some(path),
                    Field::Meta(_) => return self.error("a data field"),
                }
            };
            self.symbol(")")?;
            let alias = if self.eat_keyword("AS") {
                match self.next() {
                    Token::Word(w) | Token::Quoted(w) | Token::Str(w) => Some(w),
                    _ => return self.error("a name"),
                }
            } else {
                None
            };
            aggregates.push(Aggregate {
                function,
                field,
                alias,
            });
            if !self.eat_symbol(",") {
                break;
            }
        }
        let namespace = self.namespace()?;
        let filter = self.filter()?;
        let group_by = if self.eat_keyword("GROUP") {
            self.keyword("BY")?;
            match self.field()? {
                Field::Data(path) => Some(path),
                Field::Meta(_) => return self.error("a data field"),
            }
        } else {
            None
        };
        Ok(Statement::Aggregate {
            aggregates,
            namespace,
            filter,
            group_by,
        })
    }

    /// `a.b[0].c`, `` `order`.x ``, or `@id`.
    fn field(&mut self) -> Result<Field, SyntaxError> {
        let at = self.position();
        let first = match self.next() {
            Token::Meta(m) => {
                return Ok(Field::Meta(match m.as_str() {
                    "id" => Meta::Id,
                    "namespace" => Meta::Namespace,
                    "created_at" => Meta::CreatedAt,
                    "updated_at" => Meta::UpdatedAt,
                    "score" => Meta::Score,
                    _ => {
                        return Err(SyntaxError {
                            position: at,
                            message: format!(
                                "unknown field `@{m}`: expected @id, @namespace, @created_at, @updated_at or @score"
                            ),
                        });
                    }
                }));
            }
            Token::Word(w) | Token::Quoted(w) => w,
            other => {
                return Err(SyntaxError {
                    position: at,
                    message: format!("expected a field, found {other}"),
                });
            }
        };
        let mut path = vec![Step::Key(first)];
        loop {
            if self.eat_symbol(".") {
                match self.next() {
                    Token::Word(w) | Token::Quoted(w) => path.push(Step::Key(w)),
                    _ => {
                        self.unread();
                        return self.error("a field name after `.`");
                    }
                }
            } else if self.eat_symbol("[") {
                match self.next() {
                    Token::Number(n) => match n.parse::<i64>() {
                        Ok(index) => path.push(Step::Index(index)),
                        Err(_) => {
                            self.unread();
                            return self.error("an integer index");
                        }
                    },
                    Token::Str(key) => path.push(Step::Key(key)),
                    _ => {
                        self.unread();
                        return self.error("an integer index or a quoted key");
                    }
                }
                self.symbol("]")?;
            } else {
                return Ok(Field::Data(path));
            }
        }
    }

    fn condition(&mut self) -> Result<Condition, SyntaxError> {
        self.deeper()?;
        let mut left = self.conjunction()?;
        while self.eat_keyword("OR") {
            let right = self.conjunction()?;
            left = Condition::Or(Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn conjunction(&mut self) -> Result<Condition, SyntaxError> {
        let mut left = self.negation()?;
        while self.eat_keyword("AND") {
            let right = self.negation()?;
            left = Condition::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn negation(&mut self) -> Result<Condition, SyntaxError> {
        if self.eat_keyword("NOT") {
            self.deeper()?;
            let inner = self.negation()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, SyntaxError> {
        self.tests += 1;
        if self.tests > MAX_TESTS {
            return Err(SyntaxError {
                position: self.position(),
                message: format!("the query has more than {MAX_TESTS} tests"),
            });
        }
        if self.eat_symbol("(") {
            let inner = self.condition()?;
            self.symbol(")")?;
            return Ok(inner);
        }
        if self.eat_keyword("EXISTS") {
            return Ok(Condition::Exists(self.field()?));
        }
        if !matches!(
            self.peek(),
            Token::Word(_) | Token::Quoted(_) | Token::Meta(_)
        ) {
            return self.error("a condition: a field, `NOT`, `EXISTS` or `(`");
        }
        let field = self.field()?;
        let compare = match self.peek() {
            Token::Symbol("=") => Some(Compare::Eq),
            Token::Symbol("!=" | "<>") => Some(Compare::Ne),
            Token::Symbol("<") => Some(Compare::Lt),
            Token::Symbol("<=") => Some(Compare::Le),
            Token::Symbol(">") => Some(Compare::Gt),
            Token::Symbol(">=") => Some(Compare::Ge),
            _ => None,
        };
        if let Some(compare) = compare {
            self.next();
            return Ok(Condition::Compare(field, compare, self.value()?));
        }
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("IN") {
            self.symbol("(")?;
            let mut values = vec![self.value()?];
            while self.eat_symbol(",") {
                values.push(self.value()?);
            }
            self.symbol(")")?;
            let test = Condition::In(field, values);
            return Ok(if negated {
                Condition::Not(Box::new(test))
            } else {
                test
            });
        }
        if self.eat_keyword("BETWEEN") {
            let low = self.value()?;
            self.keyword("AND")?;
            let high = self.value()?;
            let test = Condition::Between(field, low, high);
            return Ok(if negated {
                Condition::Not(Box::new(test))
            } else {
                test
            });
        }
        if negated {
            return self.error("`IN` or `BETWEEN` after `NOT`");
        }
        self.error("a comparison (=, !=, <, <=, >, >=), `IN` or `BETWEEN`")
    }

    fn value(&mut self) -> Result<Value, SyntaxError> {
        let at = self.position();
        match self.next() {
            Token::Str(s) => Ok(Value::Json(serde_json::Value::String(s))),
            Token::Number(n) => {
                let number: serde_json::Number = n.parse().map_err(|_| SyntaxError {
                    position: at,
                    message: format!("`{n}` is not a number"),
                })?;
                Ok(Value::Json(serde_json::Value::Number(number)))
            }
            Token::Param(p) => Ok(Value::Param(p)),
            Token::Word(w) if w.eq_ignore_ascii_case("true") => Ok(Value::Json(true.into())),
            Token::Word(w) if w.eq_ignore_ascii_case("false") => Ok(Value::Json(false.into())),
            Token::Word(w) if w.eq_ignore_ascii_case("null") => {
                Ok(Value::Json(serde_json::Value::Null))
            }
            Token::Symbol("[") => {
                self.deeper()?;
                let mut items = Vec::new();
                if !self.eat_symbol("]") {
                    loop {
                        items.push(self.value()?);
                        if self.eat_symbol("]") {
                            break;
                        }
                        self.symbol(",")?;
                    }
                }
                self.depth -= 1;
                Ok(Value::Array(items))
            }
            Token::Symbol("{") => {
                self.deeper()?;
                let mut fields = Vec::new();
                if !self.eat_symbol("}") {
                    loop {
                        let key = match self.next() {
                            Token::Str(k) | Token::Word(k) | Token::Quoted(k) => k,
                            _ => {
                                self.unread();
                                return self.error("a key");
                            }
                        };
                        self.symbol(":")?;
                        fields.push((key, self.value()?));
                        if self.eat_symbol("}") {
                            break;
                        }
                        self.symbol(",")?;
                    }
                }
                self.depth -= 1;
                Ok(Value::Object(fields))
            }
            other => Err(SyntaxError {
                position: at,
                message: format!("expected a value, found {other}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Step {
        Step::Key(k.to_owned())
    }

    #[test]
    fn a_find_reads_every_clause() {
        let parsed = statement(
            "find in books where (price >= 10 and price < 20.5) or not tags[0] in ('a', $t)
             and EXISTS meta.`order` NEAR $v USING cosine TOP 5 ORDER BY @created_at DESC, title LIMIT 10 OFFSET 2",
        )
        .unwrap();
        let Statement::Find(find) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(find.namespace, Some(Value::Json("books".into())));
        assert_eq!(find.near.as_ref().unwrap().metric, Metric::Cosine);
        assert_eq!(find.near.unwrap().vector, Value::Param("v".into()));
        assert_eq!(
            find.order,
            [
                (Field::Meta(Meta::CreatedAt), Direction::Desc),
                (Field::Data(vec![key("title")]), Direction::Asc)
            ]
        );
        let Some(Condition::Or(left, right)) = find.filter else {
            panic!()
        };
        assert!(matches!(*left, Condition::And(..)));
        let Condition::And(not, exists) = *right else {
            panic!()
        };
        assert_eq!(
            *not,
            Condition::Not(Box::new(Condition::In(
                Field::Data(vec![key("tags"), Step::Index(0)]),
                vec![Value::Json("a".into()), Value::Param("t".into())]
            )))
        );
        assert_eq!(
            *exists,
            Condition::Exists(Field::Data(vec![key("meta"), key("order")]))
        );
    }

    #[test]
    fn writes_and_aggregates() {
        assert_eq!(
            statement("INSERT INTO notes {title: 'x', \"n\": [1, {a: null}]} VECTOR [1, 2] ID 'k' BUFFERED")
                .unwrap(),
            Statement::Insert {
                namespace: Some(Value::Json("notes".into())),
                data: Value::Object(vec![
                    ("title".into(), Value::Json("x".into())),
                    (
                        "n".into(),
                        Value::Array(vec![
                            Value::Json(1.into()),
                            Value::Object(vec![("a".into(), Value::Json(serde_json::Value::Null))])
                        ])
                    ),
                ]),
                vector: Some(Value::Array(vec![
                    Value::Json(1.into()),
                    Value::Json(2.into())
                ])),
                id: Some(Value::Json("k".into())),
                buffered: true,
            }
        );
        assert!(matches!(
            statement("UPDATE IN notes SET a.b = 1, c = $c WHERE @id = 'x'").unwrap(),
            Statement::Update { set, target: Target::Filter(_), .. } if set.len() == 2
        ));
        assert!(matches!(
            statement("delete id $id;").unwrap(),
            Statement::Delete {
                target: Target::Id(Value::Param(_)),
                ..
            }
        ));
        let Statement::Aggregate {
            aggregates,
            group_by,
            ..
        } = statement("AGGREGATE count(*) AS n, avg(price) IN shop WHERE x = 1 GROUP BY kind")
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(aggregates[0].field, None);
        assert_eq!(aggregates[1].function, Function::Avg);
        assert_eq!(group_by, Some(vec![key("kind")]));
    }

    #[test]
    fn errors_say_where_and_what_was_expected() {
        let cases = [
            ("FIND WHERE", 1, 11, "expected a condition"),
            (
                "FIND WHERE a =",
                1,
                15,
                "expected a value, found the end of the query",
            ),
            (
                "FIND\nWHERE a = 1 LIMT 3",
                2,
                13,
                "expected the end of the query, found `LIMT`",
            ),
            ("SELECT 1", 1, 1, "expected FIND, COUNT"),
            (
                "FIND NEAR [1] USING hamming TOP 3",
                1,
                21,
                "expected a metric",
            ),
            (
                "FIND WHERE NOT a = 1 AND b LIKE 'x'",
                1,
                28,
                "expected a comparison",
            ),
            ("UPDATE SET @id = 1 ID 'x'", 1, 12, "only data fields"),
            ("INSERT [1]", 1, 8, "the record's data"),
            ("FIND WHERE a = [1, 2", 1, 21, "expected `,`"),
        ];
        for (query, line, column, message) in cases {
            let error = statement(query).unwrap_err();
            assert!(error.message.contains(message), "{query}: {error}");
            assert_eq!(
                (error.position.line, error.position.column),
                (line, column),
                "{query}: {error}"
            );
        }
    }

    #[test]
    fn long_chains_are_bounded_and_errors_at_the_end_name_the_end() {
        let chain = format!("FIND WHERE a = 1{}", " OR a = 1".repeat(300));
        assert!(
            statement(&chain)
                .unwrap_err()
                .message
                .contains("more than 256 tests")
        );
        let error = statement("FIND WHERE a.").unwrap_err();
        assert_eq!(
            error.message,
            "expected a field name after `.`, found the end of the query"
        );
        assert_eq!(error.position.column, 14);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("FIND WHERE {}a = 1{}", "(".repeat(200), ")".repeat(200));
        assert!(
            statement(&deep)
                .unwrap_err()
                .message
                .contains("nests deeper")
        );
        let value = format!("FIND WHERE a = {}1{}", "[".repeat(200), "]".repeat(200));
        assert!(
            statement(&value)
                .unwrap_err()
                .message
                .contains("nests deeper")
        );
        let nots = format!("FIND WHERE {} a = 1", "NOT ".repeat(200));
        assert!(
            statement(&nots)
                .unwrap_err()
                .message
                .contains("nests deeper")
        );
    }
}
