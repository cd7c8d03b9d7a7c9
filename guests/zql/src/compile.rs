//! ZQL to SQL: every value, path and name the query holds becomes a
//! parameter (`$n`) of a statement over the tenant's `zatabase_records`;
//! nothing from the query is spliced into the SQL text.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use zatabase_guest_kit::types::{Scalar, Value as SqlValue};
use zatabase_guest_kit::values;

use crate::parser::{
    Aggregate, Compare, Condition, Direction, Field, Find, Function, Meta, Metric, Near, Statement,
    Step, Target, Value,
};

/// A statement ready for the `sql` capability, and how to read its result.
#[derive(Debug)]
pub struct Sql {
    pub statement: String,
    pub params: Vec<SqlValue>,
    pub shape: Shape,
}

/// What the statement's rows are.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Shape {
    /// Records (`id`, `namespace`, `data`, times; `score` after `NEAR`).
    Records,
    /// Rows of computed values (counts, aggregates).
    Values,
    /// A write: its count of records is what matters (`RETURNING id`).
    Write,
}

/// Why a parsed query cannot run: a 400, like a syntax error, or a 422
/// for data a record cannot hold.
#[derive(Debug, PartialEq)]
pub struct CompileError {
    pub message: String,
    pub status: u16,
}

type Result<T> = std::result::Result<T, CompileError>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(CompileError {
        message: message.into(),
        status: 400,
    })
}

/// 422 when data written under `prefix` steps of a record (0: the record's
/// data itself) would nest deeper than a record may: it could be stored,
/// but not read back.
fn shallow_enough(json: &Json, prefix: usize, what: &str) -> Result<()> {
    if prefix + values::depth(json) > values::MAX_DEPTH {
        return Err(CompileError {
            message: format!("{what} nests deeper than {} levels", values::MAX_DEPTH),
            status: 422,
        });
    }
    Ok(())
}

/// The most records one query returns or `NEAR` ranks.
pub const MAX_LIMIT: i64 = 10_000;
/// The default when a `FIND` names no limit.
pub const DEFAULT_LIMIT: i64 = 100;

pub const RECORD_COLUMNS: &str = "id, namespace, data, created_at, updated_at";

struct Builder<'p> {
    params: Vec<SqlValue>,
    given: &'p BTreeMap<String, Json>,
}

impl Builder<'_> {
    fn bind(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// A value with its parameters filled in.
    fn resolve(&self, value: &Value) -> Result<Json> {
        Ok(match value {
            Value::Json(json) => json.clone(),
            Value::Param(name) => match self.given.get(name) {
                Some(json) => json.clone(),
                None => return fail(format!("parameter `${name}` is not given")),
            },
            Value::Array(items) => Json::Array(
                items
                    .iter()
                    .map(|v| self.resolve(v))
                    .collect::<Result<_>>()?,
            ),
            Value::Object(fields) => Json::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                    .collect::<Result<_>>()?,
            ),
        })
    }

    fn json(&mut self, value: &Value) -> Result<String> {
        let json = self.resolve(value)?;
        Ok(format!(
            "{}::jsonb",
            self.bind(SqlValue::Scalar(Scalar::Json(json.to_string())))
        ))
    }

    fn text(&mut self, value: &Value, what: &str) -> Result<String> {
        match self.resolve(value)? {
            Json::String(s) => Ok(self.bind(SqlValue::Scalar(Scalar::Text(s)))),
            other => fail(format!("{what} must be a string, got {other}")),
        }
    }

    fn integer(
        &mut self,
        value: &Value,
        what: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64> {
        match self.resolve(value)?.as_i64() {
            Some(n) if range.contains(&n) => Ok(n),
            _ => fail(format!(
                "{what} must be an integer from {} to {}",
                range.start(),
                range.end()
            )),
        }
    }

    /// A path's steps as a `text[]` parameter.
    fn steps(&mut self, steps: &[Step]) -> String {
        let items = steps
            .iter()
            .map(|s| {
                Some(Scalar::Text(match s {
                    Step::Key(k) => k.clone(),
                    Step::Index(i) => i.to_string(),
                }))
            })
            .collect();
        format!("{}::text[]", self.bind(SqlValue::Array(items)))
    }

    /// The value at a path into `data`.
    fn path(&mut self, steps: &[Step]) -> String {
        format!("(data #> {})", self.steps(steps))
    }

    /// A vector parameter; `cosine`: one ranked by cosine distance, which
    /// a vector without a direction has none to.
    fn vector(&mut self, value: &Value, cosine: bool) -> Result<String> {
        let json = self.resolve(value)?;
        let Some(items) = json.as_array().filter(|a| !a.is_empty()) else {
            return fail("a vector must be a non-empty array of numbers");
        };
        let mut floats = Vec::with_capacity(items.len());
        for item in items {
            // A vector holds 32-bit floats: 1e39 is no number there.
            match item.as_f64().map(|f| f as f32) {
                Some(f) if f.is_finite() => floats.push(f),
                _ => return fail("a vector must be a non-empty array of 32-bit float numbers"),
            }
        }
        if cosine && !zatabase_guest_kit::values::has_direction(floats.iter().copied()) {
            return fail("a zero vector has no direction: cosine distance is undefined for it");
        }
        Ok(format!(
            "{}::extensions.vector",
            self.bind(SqlValue::Scalar(Scalar::Vector(floats)))
        ))
    }

    fn namespace(&mut self, namespace: Option<&Value>) -> Result<Option<String>> {
        namespace.map(|n| self.text(n, "a namespace")).transpose()
    }

    fn condition(&mut self, condition: &Condition) -> Result<String> {
        Ok(match condition {
            Condition::And(a, b) => format!("({} AND {})", self.condition(a)?, self.condition(b)?),
            Condition::Or(a, b) => format!("({} OR {})", self.condition(a)?, self.condition(b)?),
            Condition::Not(a) => format!("(NOT {})", self.condition(a)?),
            Condition::Exists(Field::Data(path)) => format!("({} IS NOT NULL)", self.path(path)),
            Condition::Exists(Field::Meta(_)) => {
                return fail("EXISTS takes a data field; `@` fields always exist");
            }
            Condition::Compare(field, compare, value) => self.compare(field, *compare, value)?,
            Condition::Between(field, low, high) => format!(
                "({} AND {})",
                self.compare(field, Compare::Ge, low)?,
                self.compare(field, Compare::Le, high)?
            ),
            Condition::In(Field::Data(path), values) => {
                let left = self.path(path);
                let list = self.json(&Value::Array(values.clone()))?;
                format!("({left} IN (SELECT jsonb_array_elements({list})))")
            }
            Condition::In(Field::Meta(meta), values) => {
                let column = self.meta_column(*meta)?;
                let mut items = Vec::new();
                for value in values {
                    items.push(self.meta_value(*meta, value)?);
                }
                format!("({column} IN ({}))", items.join(", "))
            }
        })
    }

    fn meta_column(&self, meta: Meta) -> Result<&'static str> {
        match meta {
            Meta::Id => Ok("id"),
            Meta::Namespace => Ok("namespace"),
            Meta::CreatedAt => Ok("created_at"),
            Meta::UpdatedAt => Ok("updated_at"),
            Meta::Score => fail("@score is the distance of a NEAR search: it can only order"),
        }
    }

    fn meta_value(&mut self, meta: Meta, value: &Value) -> Result<String> {
        let text = self.text(
            value,
            &format!("a value compared with @{}", meta_name(meta)),
        )?;
        Ok(match meta {
            Meta::CreatedAt | Meta::UpdatedAt => format!("{text}::timestamptz"),
            _ => text,
        })
    }

    /// A comparison is false when the field is missing; an ordering one
    /// also when the field holds another JSON type than the value.
    fn compare(&mut self, field: &Field, compare: Compare, value: &Value) -> Result<String> {
        let op = match compare {
            Compare::Eq => "=",
            Compare::Ne => "<>",
            Compare::Lt => "<",
            Compare::Le => "<=",
            Compare::Gt => ">",
            Compare::Ge => ">=",
        };
        match field {
            Field::Meta(meta) => {
                let column = self.meta_column(*meta)?;
                let value = self.meta_value(*meta, value)?;
                Ok(format!("({column} {op} {value})"))
            }
            Field::Data(path) => {
                let left = self.path(path);
                let right = self.json(value)?;
                Ok(match compare {
                    Compare::Eq | Compare::Ne => format!("({left} {op} {right})"),
                    _ => format!(
                        "(jsonb_typeof({left}) = jsonb_typeof({right}) AND {left} {op} {right})"
                    ),
                })
            }
        }
    }

    fn filter(&mut self, namespace: Option<&Value>, filter: Option<&Condition>) -> Result<String> {
        let mut clauses = vec!["true".to_owned()];
        if let Some(ns) = self.namespace(namespace)? {
            clauses.push(format!("namespace = {ns}"));
        }
        if let Some(condition) = filter {
            clauses.push(self.condition(condition)?);
        }
        Ok(clauses.join(" AND "))
    }

    fn target(&mut self, namespace: Option<&Value>, target: &Target) -> Result<String> {
        match target {
            Target::Id(id) => {
                let id = self.text(id, "a record id")?;
                let mut clause = format!("id = {id}");
                if let Some(ns) = self.namespace(namespace)? {
                    clause.push_str(&format!(" AND namespace = {ns}"));
                }
                Ok(clause)
            }
            Target::Filter(condition) => self.filter(namespace, Some(condition)),
        }
    }
}

fn meta_name(meta: Meta) -> &'static str {
    match meta {
        Meta::Id => "id",
        Meta::Namespace => "namespace",
        Meta::CreatedAt => "created_at",
        Meta::UpdatedAt => "updated_at",
        Meta::Score => "score",
    }
}

fn operator(metric: Metric) -> &'static str {
    match metric {
        Metric::L2 => "OPERATOR(extensions.<->)",
        Metric::Cosine => "OPERATOR(extensions.<=>)",
        Metric::InnerProduct => "OPERATOR(extensions.<#>)",
    }
}

/// Compiles `statement` with the request's named `params`.
pub fn compile(statement: &Statement, params: &BTreeMap<String, Json>) -> Result<Sql> {
    let mut b = Builder {
        params: Vec::new(),
        given: params,
    };
    let (statement, shape) = match statement {
        Statement::Find(find) => (find_sql(&mut b, find)?, Shape::Records),
        Statement::Get { id } => {
            let id = b.text(id, "a record id")?;
            (
                format!("SELECT {RECORD_COLUMNS} FROM zatabase_records WHERE id = {id}"),
                Shape::Records,
            )
        }
        Statement::Count { namespace, filter } => {
            let filter = b.filter(namespace.as_ref(), filter.as_ref())?;
            (
                format!("SELECT count(*) AS count FROM zatabase_records WHERE {filter}"),
                Shape::Values,
            )
        }
        Statement::Aggregate {
            aggregates,
            namespace,
            filter,
            group_by,
        } => (
            aggregate_sql(
                &mut b,
                aggregates,
                namespace.as_ref(),
                filter.as_ref(),
                group_by.as_deref(),
            )?,
            Shape::Values,
        ),
        Statement::Insert {
            namespace,
            data,
            vector,
            id,
            buffered,
        } => {
            let data_json = b.resolve(data)?;
            if !data_json.is_object() {
                return fail("a record's data must be a JSON object");
            }
            shallow_enough(&data_json, 0, "the record's data")?;
            let id = match id {
                Some(id) => b.text(id, "a record id")?,
                None => "gen_random_uuid()::text".to_owned(),
            };
            let namespace = match namespace {
                Some(ns) => b.text(ns, "a namespace")?,
                None => b.bind(SqlValue::Scalar(Scalar::Text(DEFAULT_NAMESPACE.to_owned()))),
            };
            let data = b.bind(SqlValue::Scalar(Scalar::Json(data_json.to_string())));
            let vector = match vector {
                Some(v) => b.vector(v, false)?,
                None => "NULL".to_owned(),
            };
            // A buffered insert turns off the synchronous commit of its own
            // transaction, in the same statement (one round trip).
            let source = if *buffered {
                " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS buffered"
            } else {
                ""
            };
            (
                format!(
                    "INSERT INTO zatabase_records (id, namespace, data, embedding, pending)
                     SELECT {id}, {namespace}, {data}::jsonb, {vector}, {buffered}{source} RETURNING id"
                ),
                Shape::Write,
            )
        }
        Statement::Update {
            namespace,
            set,
            target,
        } => {
            let mut data = "data".to_owned();
            for (path, value) in set {
                // The record's data is at most as deep as a record may be,
                // and `jsonb_set` adds at most the last step of the path.
                shallow_enough(&b.resolve(value)?, path.len(), "the value set")?;
                let steps = b.steps(path);
                let value = b.json(value)?;
                data = format!("jsonb_set({data}, {steps}, {value}, true)");
            }
            let filter = b.target(namespace.as_ref(), target)?;
            (
                format!(
                    "UPDATE zatabase_records SET data = {data}, updated_at = now()
                     WHERE {filter} RETURNING id"
                ),
                Shape::Write,
            )
        }
        Statement::Delete { namespace, target } => {
            let filter = b.target(namespace.as_ref(), target)?;
            (
                format!("DELETE FROM zatabase_records WHERE {filter} RETURNING id"),
                Shape::Write,
            )
        }
    };
    Ok(Sql {
        statement,
        params: b.params,
        shape,
    })
}

/// Records go here when an insert names no namespace.
pub const DEFAULT_NAMESPACE: &str = "default";

fn find_sql(b: &mut Builder, find: &Find) -> Result<String> {
    let mut select = RECORD_COLUMNS.to_owned();
    let mut filter = b.filter(find.namespace.as_ref(), find.filter.as_ref())?;
    let mut order = Vec::new();
    let given_limit = match &find.limit {
        Some(limit) => Some(b.integer(limit, "LIMIT", 0..=MAX_LIMIT)?),
        None => None,
    };
    let mut limit = given_limit.unwrap_or(DEFAULT_LIMIT);
    let offset = match &find.offset {
        Some(offset) => b.integer(offset, "OFFSET", 0..=i64::from(i32::MAX))?,
        None => 0,
    };
    if let Some(Near {
        vector,
        metric,
        top,
    }) = &find.near
    {
        let top = b.integer(top, "TOP", 1..=MAX_LIMIT)?;
        let vector = b.vector(vector, *metric == Metric::Cosine)?;
        let distance = format!("(embedding {} {vector})", operator(*metric));
        select.push_str(&format!(", {distance} AS score"));
        filter.push_str(" AND embedding IS NOT NULL");
        order.push("score".to_owned());
        // The nearest `top` are the result set: a page of them never
        // reaches past them, and without LIMIT the page is all of them.
        limit = given_limit.unwrap_or(top).min((top - offset).max(0));
    }
    for (field, direction) in &find.order {
        let key = match field {
            Field::Meta(Meta::Score) if find.near.is_none() => {
                return fail("ORDER BY @score needs a NEAR search");
            }
            // Nearest first is what NEAR answers; an order after it only
            // breaks ties, so this one would be silently ignored.
            Field::Meta(Meta::Score) if matches!(direction, Direction::Desc) => {
                return fail(
                    "ORDER BY @score DESC: a NEAR search answers its nearest first, and an \
                     ORDER BY after it only breaks ties",
                );
            }
            Field::Meta(Meta::Score) => "score".to_owned(),
            Field::Meta(meta) => b.meta_column(*meta)?.to_owned(),
            Field::Data(path) => b.path(path),
        };
        let direction = match direction {
            Direction::Asc => "ASC NULLS LAST",
            Direction::Desc => "DESC NULLS LAST",
        };
        order.push(format!("{key} {direction}"));
    }
    order.push("id".to_owned());
    let limit = b.bind(SqlValue::Scalar(Scalar::Int64(limit)));
    let offset = b.bind(SqlValue::Scalar(Scalar::Int64(offset)));
    Ok(format!(
        "SELECT {select} FROM zatabase_records WHERE {filter} ORDER BY {} LIMIT {limit} OFFSET {offset}",
        order.join(", ")
    ))
}

fn aggregate_sql(
    b: &mut Builder,
    aggregates: &[Aggregate],
    namespace: Option<&Value>,
    filter: Option<&Condition>,
    group_by: Option<&[Step]>,
) -> Result<String> {
    let mut columns = Vec::new();
    let group = group_by.map(|path| (b.path(path), path_name(path)));
    let mut taken = std::collections::BTreeSet::new();
    if let Some((expression, name)) = &group {
        taken.insert(name.clone());
        columns.push(format!("{expression} AS {}", quote_alias(name)?));
    }
    for aggregate in aggregates {
        let function = function_name(aggregate.function);
        let expression = match &aggregate.field {
            None => "count(*)".to_owned(),
            Some(path) => {
                let value = b.path(path);
                if aggregate.function == Function::Count {
                    format!("count({value})")
                } else {
                    // Only numbers take part; the result stays a JSON number.
                    format!(
                        "to_jsonb(trim_scale({function}(CASE WHEN jsonb_typeof({value}) = 'number' THEN ({value})::text::numeric END)))"
                    )
                }
            }
        };
        let alias = result_name(aggregate);
        if !taken.insert(alias.clone()) {
            return fail(format!("two results are named `{alias}`; name one with AS"));
        }
        columns.push(format!("{expression} AS {}", quote_alias(&alias)?));
    }
    let filter = b.filter(namespace, filter)?;
    let mut sql = format!(
        "SELECT {} FROM zatabase_records WHERE {filter}",
        columns.join(", ")
    );
    if let Some((expression, _)) = group {
        sql.push_str(&format!(
            " GROUP BY {expression} ORDER BY {expression} NULLS LAST"
        ));
    }
    Ok(sql)
}

fn function_name(function: Function) -> &'static str {
    match function {
        Function::Count => "count",
        Function::Sum => "sum",
        Function::Avg => "avg",
        Function::Min => "min",
        Function::Max => "max",
    }
}

/// What an aggregate's result is named: its alias, else `count` for
/// `COUNT(*)`, else the function and the path (`sum(price)`).
pub fn result_name(aggregate: &Aggregate) -> String {
    match (&aggregate.alias, &aggregate.field) {
        (Some(alias), _) => alias.clone(),
        (None, None) => "count".to_owned(),
        (None, Some(path)) => format!("{}({})", function_name(aggregate.function), path_name(path)),
    }
}

fn path_name(path: &[Step]) -> String {
    let mut name = String::new();
    for step in path {
        match step {
            Step::Key(k) if name.is_empty() => name.push_str(k),
            Step::Key(k) => {
                name.push('.');
                name.push_str(k);
            }
            Step::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

/// An output column name, as a quoted identifier (the only text of the
/// query that reaches the SQL outside a parameter, quoted by the rules).
fn quote_alias(name: &str) -> Result<String> {
    if name.is_empty() || name.contains('\0') || name.len() > 63 {
        return fail(format!(
            "`{}` cannot name a result: 1 to 63 bytes, no NUL",
            name.escape_debug()
        ));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::statement;

    fn sql(query: &str) -> Sql {
        compile(&statement(query).unwrap(), &BTreeMap::new()).unwrap()
    }

    #[test]
    fn values_and_paths_are_parameters() {
        let compiled = sql(
            "FIND IN books WHERE title = 'x''; DROP TABLE t' AND price > 3 ORDER BY meta.year DESC LIMIT 5",
        );
        assert_eq!(
            compiled.statement,
            "SELECT id, namespace, data, created_at, updated_at FROM zatabase_records \
             WHERE true AND namespace = $1 AND (((data #> $2::text[]) = $3::jsonb) AND \
             (jsonb_typeof((data #> $4::text[])) = jsonb_typeof($5::jsonb) AND (data #> $4::text[]) > $5::jsonb)) \
             ORDER BY (data #> $6::text[]) DESC NULLS LAST, id LIMIT $7 OFFSET $8"
        );
        assert!(!compiled.statement.contains("DROP"));
        assert_eq!(
            format!("{:?}", compiled.params[2]),
            format!(
                "{:?}",
                SqlValue::Scalar(Scalar::Json("\"x'; DROP TABLE t\"".into()))
            )
        );
    }

    #[test]
    fn a_vector_without_a_direction_has_no_cosine_distance() {
        let compiled = |zql: &str| compile(&statement(zql).unwrap(), &BTreeMap::new());
        for zero in ["[0, 0]", "[1e-30, 0]"] {
            let refused = compiled(&format!("FIND NEAR {zero} USING cosine TOP 3")).unwrap_err();
            assert!(
                refused.message.contains("no direction"),
                "{}",
                refused.message
            );
            assert!(compiled(&format!("FIND NEAR {zero} USING l2 TOP 3")).is_ok());
        }
        assert!(compiled("FIND NEAR [1e-19, 0] USING cosine TOP 3").is_ok());
    }

    #[test]
    fn near_keeps_its_top_k_whatever_the_page() {
        let limit_and_offset = |zql: &str| {
            let compiled = sql(zql);
            let n = compiled.params.len();
            format!("{:?}", &compiled.params[n - 2..])
        };
        let ints = |limit: i64, offset: i64| {
            format!(
                "{:?}",
                [
                    SqlValue::Scalar(Scalar::Int64(limit)),
                    SqlValue::Scalar(Scalar::Int64(offset))
                ]
            )
        };
        // Without LIMIT, all of the top k (not the default page of 100).
        assert_eq!(limit_and_offset("FIND NEAR [1, 0] TOP 500"), ints(500, 0));
        // A page never reaches past the top k.
        assert_eq!(
            limit_and_offset("FIND NEAR [1, 0] TOP 2 OFFSET 1"),
            ints(1, 1)
        );
        assert_eq!(
            limit_and_offset("FIND NEAR [1, 0] TOP 2 OFFSET 5"),
            ints(0, 5)
        );
        assert_eq!(
            limit_and_offset("FIND NEAR [1, 0] TOP 9 LIMIT 3 OFFSET 3"),
            ints(3, 3)
        );
        assert_eq!(limit_and_offset("FIND LIMIT 3 OFFSET 3"), ints(3, 3));
        assert_eq!(limit_and_offset("FIND"), ints(100, 0));
    }

    #[test]
    fn near_ranks_after_the_filter() {
        let compiled = sql("FIND WHERE kind = 'a' NEAR [1, 2] USING cosine TOP 3");
        assert!(
            compiled
                .statement
                .contains("AND embedding IS NOT NULL ORDER BY score, id LIMIT $4")
        );
        assert_eq!(
            format!("{:?}", compiled.params[3]),
            format!("{:?}", SqlValue::Scalar(Scalar::Int64(3)))
        );
        assert!(
            compiled
                .statement
                .contains("(embedding OPERATOR(extensions.<=>) $3::extensions.vector) AS score")
        );
        assert_eq!(
            format!("{:?}", compiled.params[2]),
            format!("{:?}", SqlValue::Scalar(Scalar::Vector(vec![1.0, 2.0])))
        );
    }

    #[test]
    fn parameters_fill_in_and_missing_ones_are_named() {
        let params = BTreeMap::from([("t".to_owned(), serde_json::json!(["a", 1]))]);
        let compiled =
            compile(&statement("FIND WHERE tags IN ($t, 'b')").unwrap(), &params).unwrap();
        assert_eq!(
            format!("{:?}", compiled.params[1]),
            format!(
                "{:?}",
                SqlValue::Scalar(Scalar::Json("[[\"a\",1],\"b\"]".into()))
            )
        );
        let missing = compile(&statement("FIND WHERE a = $nope").unwrap(), &params).unwrap_err();
        assert_eq!(missing.message, "parameter `$nope` is not given");
        assert_eq!(missing.status, 400);
    }

    #[test]
    fn writes_never_nest_deeper_than_a_record_may() {
        let nested = |levels: usize| {
            (0..levels).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]))
        };
        let params = BTreeMap::from([("p".to_owned(), nested(99))]);
        // {a: {b: <99 levels>}}: 101 levels.
        let deep = compile(&statement("INSERT {a: {b: $p}}").unwrap(), &params).unwrap_err();
        assert_eq!(deep.status, 422, "{}", deep.message);
        assert!(compile(&statement("INSERT {a: $p}").unwrap(), &params).is_ok());
        // Set two steps down: 101 levels where it lands.
        let set = statement("UPDATE SET a.b = $p WHERE @id = 'x'").unwrap();
        assert_eq!(compile(&set, &params).unwrap_err().status, 422);
        let set = statement("UPDATE SET a = $p WHERE @id = 'x'").unwrap();
        assert!(compile(&set, &params).is_ok());
    }

    #[test]
    fn impossible_queries_are_refused() {
        for (query, message) in [
            (
                "FIND LIMIT 100000",
                "LIMIT must be an integer from 0 to 10000",
            ),
            ("FIND ORDER BY @score", "needs a NEAR search"),
            (
                "FIND NEAR [1, 0] TOP 3 ORDER BY @score DESC",
                "only breaks ties",
            ),
            ("FIND WHERE @score < 1", "can only order"),
            ("FIND WHERE @id = 3", "must be a string"),
            ("FIND NEAR [] TOP 3", "non-empty array"),
            ("FIND NEAR ['a'] TOP 3", "non-empty array"),
            ("INSERT {a: 1} ID 5", "a record id must be a string"),
            ("FIND WHERE EXISTS @id", "EXISTS takes a data field"),
            ("AGGREGATE count(*) AS ''", "cannot name a result"),
            (
                "AGGREGATE count(*), count(*)",
                "two results are named `count`",
            ),
            (
                "AGGREGATE count(*) GROUP BY count",
                "two results are named `count`",
            ),
        ] {
            let error = compile(&statement(query).unwrap(), &BTreeMap::new()).unwrap_err();
            assert!(
                error.message.contains(message),
                "{query}: {}",
                error.message
            );
        }
    }

    #[test]
    fn a_buffered_insert_turns_off_its_own_synchronous_commit() {
        let durable = sql("INSERT INTO n {a: 1}");
        assert!(
            !durable.statement.contains("synchronous_commit"),
            "{}",
            durable.statement
        );
        assert!(
            durable.statement.contains(", false RETURNING id"),
            "{}",
            durable.statement
        );
        let buffered = sql("INSERT INTO n {a: 1} BUFFERED");
        assert!(
            buffered.statement.ends_with(
                ", true FROM (SELECT set_config('synchronous_commit', 'off', true)) AS buffered RETURNING id"
            ),
            "{}",
            buffered.statement
        );
    }

    #[test]
    fn aggregates_group_and_name_their_columns() {
        let compiled = sql("AGGREGATE count(*), avg(price) AS mean IN shop GROUP BY kind");
        assert_eq!(
            compiled.statement,
            "SELECT (data #> $1::text[]) AS \"kind\", count(*) AS \"count\", \
             to_jsonb(trim_scale(avg(CASE WHEN jsonb_typeof((data #> $2::text[])) = 'number' THEN ((data #> $2::text[]))::text::numeric END))) AS \"mean\" \
             FROM zatabase_records WHERE true AND namespace = $3 \
             GROUP BY (data #> $1::text[]) ORDER BY (data #> $1::text[]) NULLS LAST"
        );
        assert_eq!(compiled.shape, Shape::Values);
    }
}
