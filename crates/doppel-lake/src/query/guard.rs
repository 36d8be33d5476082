//! What SQL the lake runs: one statement that reads, and no expression nested deeper than a
//! limit. Checked on the parsed statement before anything is planned, so a refused query
//! never reaches DataFusion's planner (whose recursion a deep expression could overflow)
//! and nothing that writes files, creates tables or changes settings is ever planned.

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Statement, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::error::{LakeError, Result};

/// The most SQL text one query may hold. Parsing is iterative, but a parsed expression is
/// dropped recursively; this bound keeps that within the query threads' stacks.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// What the query endpoints run, for error messages.
const ALLOWED: &str =
    "SELECT (with WITH, UNION, subqueries), EXPLAIN, SHOW TABLES, SHOW COLUMNS and DESCRIBE";

/// Parses `sql` and returns its one statement if it only reads and nests no deeper than
/// `max_depth`; otherwise says why not.
pub fn check(sql: &str, max_depth: usize) -> Result<DfStatement> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(LakeError::QueryRefused(format!(
            "the query is {} bytes of SQL; the limit is {MAX_SQL_BYTES}",
            sql.len()
        )));
    }
    let mut statements = DFParserBuilder::new(sql)
        .with_dialect(&GenericDialect {})
        .build()?
        .parse_statements()?;
    let statement = match statements.len() {
        0 => return Err(LakeError::QueryRefused("the query is empty".into())),
        1 => statements.pop_front().expect("one statement"),
        n => {
            return Err(LakeError::QueryRefused(format!(
                "send one statement per query; this one has {n}"
            )));
        }
    };
    reads_only(&statement).map_err(|what| {
        LakeError::QueryRefused(format!(
            "queries are read-only: {what} is not allowed here; the SQL endpoints run {ALLOWED}"
        ))
    })?;
    let mut meter = DepthMeter {
        limit: max_depth,
        current: 0,
        refused: None,
    };
    let _ = sql_statement(&statement).visit(&mut meter);
    if let Some(why) = meter.refused {
        return Err(LakeError::QueryRefused(why));
    }
    Ok(statement)
}

/// The statement whose expressions are measured: an EXPLAIN's inner one.
fn sql_statement(statement: &DfStatement) -> &Statement {
    match statement {
        DfStatement::Statement(s) => s,
        DfStatement::Explain(e) => sql_statement(&e.statement),
        _ => unreachable!("reads_only lets only SQL statements and EXPLAIN through"),
    }
}

/// `Err(what)` names what the statement would do besides reading.
fn reads_only(statement: &DfStatement) -> std::result::Result<(), String> {
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_)
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ExplainTable { .. } => Ok(()),
            // EXPLAIN [ANALYZE] runs (ANALYZE) or plans its statement: it must read too.
            Statement::Explain { statement, .. } => {
                reads_only(&DfStatement::Statement(statement.clone()))
            }
            Statement::Drop { .. } | Statement::AlterTable { .. } | Statement::Delete(_) => {
                Err(format!(
                    "`{}` (to drop a table or a field column: `doppel lake drop`, or DELETE \
                     /api/v3/configure/table or /api/v3/configure/column)",
                    first_words(&s.to_string())
                ))
            }
            other => Err(format!("`{}`", first_words(&other.to_string()))),
        },
        DfStatement::Explain(e) => reads_only(&e.statement),
        DfStatement::CopyTo(_) => Err("`COPY` (it writes files)".into()),
        DfStatement::CreateExternalTable(_) => {
            Err("`CREATE EXTERNAL TABLE` (it reads files outside the lake)".into())
        }
        DfStatement::Reset(_) => Err("`RESET`".into()),
    }
}

/// The statement's leading keywords, as a person would name it ("CREATE TABLE", "SET").
fn first_words(sql: &str) -> String {
    sql.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

/// Walks a statement's expressions, refusing one nested deeper than the limit, a set
/// operation chain longer than it, and anything inside a query that writes.
struct DepthMeter {
    limit: usize,
    current: usize,
    refused: Option<String>,
}

impl Visitor for DepthMeter {
    type Break = ();

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.current += 1;
        if self.current > self.limit {
            self.refused = Some(format!(
                "an expression is nested more than {} deep (a long chain of operators such as \
                 `a OR b OR ...` counts one level each); use `IN (...)` for long lists of values, \
                 or split the query",
                self.limit
            ));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.current -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        // Set operations nest as a left-deep tree that the expression count does not see.
        let mut stack = vec![(query.body.as_ref(), 1usize)];
        while let Some((body, depth)) = stack.pop() {
            if depth > self.limit {
                self.refused = Some(format!(
                    "more than {} UNION/INTERSECT/EXCEPT operations nested in one query",
                    self.limit
                ));
                return ControlFlow::Break(());
            }
            match body {
                SetExpr::SetOperation { left, right, .. } => {
                    stack.push((left, depth + 1));
                    stack.push((right, depth + 1));
                }
                SetExpr::Select(select) if select.into.is_some() => {
                    self.refused =
                        Some("queries are read-only: `SELECT ... INTO` creates a table".into());
                    return ControlFlow::Break(());
                }
                SetExpr::Insert(_)
                | SetExpr::Update(_)
                | SetExpr::Delete(_)
                | SetExpr::Merge(_) => {
                    self.refused = Some(format!(
                        "queries are read-only: `{}` is not allowed here",
                        first_words(&body.to_string())
                    ));
                    return ControlFlow::Break(());
                }
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(sql: &str) -> String {
        match check(sql, 64) {
            Err(LakeError::QueryRefused(why)) => why,
            Err(other) => panic!("{sql}: refused as {other:?}, not as a refused query"),
            Ok(_) => panic!("{sql}: allowed"),
        }
    }

    #[test]
    fn reads_pass() {
        for sql in [
            "SELECT * FROM m WHERE time > now() - INTERVAL '1 hour'",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a UNION ALL SELECT 2",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
            "SHOW TABLES",
            "SHOW COLUMNS FROM m",
            "DESCRIBE m",
        ] {
            check(sql, 64).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn anything_that_writes_or_changes_is_refused_and_named() {
        for (sql, named) in [
            (
                "COPY (SELECT 1) TO '/tmp/x.parquet' STORED AS PARQUET",
                "COPY",
            ),
            ("COPY m TO '/tmp/x.csv'", "COPY"),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'",
                "CREATE EXTERNAL TABLE",
            ),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("INSERT INTO m VALUES (1)", "INSERT INTO"),
            ("DELETE FROM m", "DELETE FROM"),
            ("UPDATE m SET a = 1", "UPDATE M"),
            ("DROP TABLE m", "DROP TABLE"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN COPY (SELECT 1) TO '/tmp/x.parquet'", "COPY"),
            ("EXPLAIN ANALYZE INSERT INTO m VALUES (1)", "INSERT INTO"),
            ("SELECT 1 INTO t", "INTO"),
            ("RESET datafusion.execution.batch_size", "RESET"),
        ] {
            let why = refusal(sql);
            assert!(why.contains("read-only"), "{sql}: {why}");
            assert!(why.contains(named), "{sql}: {why}");
        }
    }

    #[test]
    fn several_statements_or_none_are_refused() {
        assert!(refusal("SELECT 1; SELECT 2").contains("one statement"));
        assert!(refusal("  ").contains("empty"));
    }

    #[test]
    fn deep_expressions_are_refused_before_planning() {
        let plus = format!("SELECT 1{}", "+1".repeat(2_000));
        assert!(refusal(&plus).contains("nested more than 64"));
        let ors = format!(
            "SELECT * FROM m WHERE a = 0{}",
            (1..2_000)
                .map(|i| format!(" OR a = {i}"))
                .collect::<String>()
        );
        assert!(refusal(&ors).contains("IN ("));
        let unions = format!("SELECT 1{}", " UNION SELECT 1".repeat(100));
        assert!(refusal(&unions).contains("UNION"));
        check(&format!("SELECT 1{}", "+1".repeat(60)), 64).unwrap();
    }

    #[test]
    fn sql_past_the_size_limit_is_refused_unparsed() {
        let huge = format!("SELECT 1{}", "+1".repeat(MAX_SQL_BYTES));
        assert!(refusal(&huge).contains("bytes of SQL"));
    }
}
