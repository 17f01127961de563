//! How database failures become registry errors: one mapping for every store of both
//! dialects ([`db_err`]), a write's broken constraint as a conflict or an unknown name
//! ([`write_err`]), and which failures say something of the write itself: the disk is
//! full, or the database refuses the values it carries ([`refused_content`]).

use berth_core::{Error, ErrorKind};

/// A database error as the registry's: the database out of reach or out of connections,
/// or a transaction it ended to break a deadlock or a serialization conflict, is
/// `UNAVAILABLE` (503 with `Retry-After`, which clients retry), anything else internal.
pub(crate) fn db_err(e: sqlx::Error) -> Error {
    // PostgreSQL's deadlock victim and serialization failure: nothing was written, and the
    // same request succeeds when sent again.
    let transient = e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "40P01" || c == "40001");
    if disk_full(&e) {
        // Nothing of the write was kept; it can succeed once space is freed.
        return Error {
            source: Some(format!("database: {e}")),
            ..Error::new(ErrorKind::StorageFull).with_message("the database's disk is full")
        };
    }
    let unavailable = match &e {
        _ if transient => Some("the database ended this transaction to resolve a conflict; retry"),
        sqlx::Error::PoolTimedOut => Some("the database is busy: no connection came free in time"),
        sqlx::Error::PoolClosed => Some("the database connections are closed (shutting down)"),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => Some("the database is unreachable"),
        _ => None,
    };
    match unavailable {
        Some(message) => Error {
            source: Some(format!("database: {e}")),
            ..Error::new(ErrorKind::Unavailable).with_message(message).with_retry_after(1)
        },
        None => Error::internal(format!("database: {e}")),
    }
}

/// The error of a write that broke a constraint: a name that exists is a conflict, a
/// reference to one that does not (a foreign key) is unknown; anything else is internal.
pub(crate) fn write_err(e: sqlx::Error, what: &str, name: &str) -> Error {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => {
            Error::new(ErrorKind::Conflict).with_message(format!("{what} {name} exists")).with_detail(name)
        }
        Some(d) if d.is_foreign_key_violation() => unknown(what, name),
        _ => db_err(e),
    }
}

pub(crate) fn unknown(what: &str, name: &str) -> Error {
    Error::new(ErrorKind::ResourceUnknown).with_message(format!("no {what} {name}")).with_detail(name)
}

/// Whether the database failed for want of disk space: SQLite's `SQLITE_FULL` (13, the
/// low byte of an extended code), PostgreSQL's `disk_full` (53100).
fn disk_full(e: &sqlx::Error) -> bool {
    match sqlite_or_sqlstate(e) {
        Some(Code::Sqlite(c)) => c & 0xff == 13,
        Some(Code::Sqlstate(s)) => s == "53100",
        None => false,
    }
}

/// Whether the database refused a write for the values it carries, which no retry of
/// the same write can cure: PostgreSQL's data exceptions (class 22: a NUL in `TEXT`, a
/// value too long) and integrity violations (class 23); SQLite's `SQLITE_TOOBIG` (18),
/// `SQLITE_CONSTRAINT` (19, a trigger's or a check's refusal too), `SQLITE_MISMATCH`
/// (20) and `SQLITE_RANGE` (25).
pub(crate) fn refused_content(e: &sqlx::Error) -> bool {
    match sqlite_or_sqlstate(e) {
        Some(Code::Sqlite(c)) => matches!(c & 0xff, 18 | 19 | 20 | 25),
        Some(Code::Sqlstate(s)) => s.starts_with("22") || s.starts_with("23"),
        None => false,
    }
}

enum Code {
    /// SQLite's (extended) result code.
    Sqlite(i32),
    /// PostgreSQL's five-character SQLSTATE.
    Sqlstate(String),
}

fn sqlite_or_sqlstate(e: &sqlx::Error) -> Option<Code> {
    let code = e.as_database_error()?.code()?;
    // An SQLSTATE always has five characters; SQLite's codes have at most four digits.
    Some(if code.len() == 5 { Code::Sqlstate(code.into_owned()) } else { Code::Sqlite(code.parse().ok()?) })
}

#[cfg(test)]
mod tests {
    /// Issue 17: on SQLite an `INSERT … RETURNING` outside a transaction commits when
    /// its statement is reset, and sqlx's `fetch_one`/`fetch_optional` take the first row
    /// and then reset it, ignoring what the reset reports: with the disk full, projects
    /// and users were answered as created and were never stored. Every write that reads
    /// rows back runs in a transaction whose `COMMIT` is checked; this keeps it so.
    #[test]
    fn no_write_reads_rows_back_outside_a_transaction() {
        let sources = [
            ("sql.rs", include_str!("sql.rs")),
            ("identity/sql.rs", include_str!("identity/sql.rs")),
            ("gc/sql.rs", include_str!("gc/sql.rs")),
            ("policy/sql.rs", include_str!("policy/sql.rs")),
            ("scrub/sql.rs", include_str!("scrub/sql.rs")),
            ("retention/sql.rs", include_str!("retention/sql.rs")),
            ("audit/sql.rs", include_str!("audit/sql.rs")),
            ("ops/sql.rs", include_str!("ops/sql.rs")),
            ("replication/sql.rs", include_str!("replication/sql.rs")),
        ];
        let mut found = Vec::new();
        for (file, text) in sources {
            for (n, line) in text.lines().enumerate() {
                if line.contains("fetch_one(&self.writer)") || line.contains("fetch_optional(&self.writer)") {
                    // A read on the writer (to see its own writes) is no write.
                    let statement: String = text.lines().take(n + 1).skip(n.saturating_sub(12)).collect();
                    let reads_only = statement.rfind("sqlx::query(").is_some_and(|at| {
                        let rest = statement[at..].trim_start_matches("sqlx::query(");
                        rest.trim_start_matches(|c: char| c == '"' || c.is_whitespace()).starts_with("SELECT")
                    });
                    if !reads_only {
                        found.push(format!("{file}:{}", n + 1));
                    }
                }
            }
        }
        assert!(found.is_empty(), "a write reads rows back on the pool, outside a transaction: {found:?}");
    }
}
