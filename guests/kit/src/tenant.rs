//! The tenant's own tables, made by the route groups that keep them (the
//! collections' settings, ZQL's records) through the `sql` capability.

use crate::sql;
use crate::types::SqlError;

/// Runs `statement`, a `CREATE ... IF NOT EXISTS` script, outside any
/// transaction. Two first uses at once may both run it: the loser waits for
/// the winner's commit and then fails on the object it made, so it runs
/// again and finds it. No advisory lock: its key would be one any tenant
/// could compute and hold.
pub fn create_if_missing(statement: &str) -> Result<(), SqlError> {
    let mut made = sql::execute(statement, &[]);
    for _ in 0..2 {
        match &made {
            Err(e) if made_meanwhile(e) => made = sql::execute(statement, &[]),
            _ => break,
        }
    }
    made.map(drop)
}

/// What `CREATE ... IF NOT EXISTS` answers when another transaction made
/// the same table or index first and committed while this one waited:
/// `unique_violation` (on the catalog), `duplicate_table` or
/// `duplicate_object` (its row type).
fn made_meanwhile(error: &SqlError) -> bool {
    matches!(error.sqlstate.as_deref(), Some("23505" | "42P07" | "42710"))
}
