//! Lake tables as model inputs: `lake:DB/TABLE` (or `lake:DB/TABLE?asset=pump-1&...` to pick
//! one series) wherever a model command takes a file. The rows are read with SQL, from the
//! running doppel at `--url` or straight from the data directory, as Arrow record batches
//! (`format=arrow`), which become a recording as a file's table does. A table holding several
//! series at once is refused with the way to pick one: mixing machines in one recording would
//! be wrong.

use std::path::Path;

use anyhow::bail;
use doppel_model::data::{ReadOptions, Recording, read_recording, recording_from_batches};
use doppel_server::query::Format;

use crate::query::run_sql;
use crate::{DataDirArg, ServerArg};

/// Where model commands find lake tables.
#[derive(clap::Args, Clone, Debug)]
pub struct LakeArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    #[command(flatten)]
    pub server: ServerArg,
}

/// A `lake:` input, taken apart.
struct LakeInput {
    db: String,
    table: String,
    filters: Vec<(String, String)>,
}

fn parse(spec: &str) -> anyhow::Result<Option<LakeInput>> {
    let Some(rest) = spec.strip_prefix("lake:") else {
        return Ok(None);
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some((db, table)) = path
        .split_once('/')
        .filter(|(d, t)| !d.is_empty() && !t.is_empty())
    else {
        bail!("`{spec}`: a lake input is lake:DB/TABLE, optionally ?tag=value&...");
    };
    let mut filters = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("`{spec}`: `{pair}` is not tag=value");
        };
        filters.push((k.to_owned(), v.to_owned()));
    }
    Ok(Some(LakeInput {
        db: db.to_owned(),
        table: table.to_owned(),
        filters,
    }))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Reads a file, or a `lake:` table, into a recording.
pub fn read_input(
    input: &Path,
    options: &ReadOptions,
    lake: &LakeArgs,
) -> anyhow::Result<Recording> {
    let spec = input.to_string_lossy();
    let Some(table) = parse(&spec)? else {
        return Ok(read_recording(input, options)?);
    };
    let filter = if table.filters.is_empty() {
        String::new()
    } else {
        let terms: Vec<String> = table
            .filters
            .iter()
            .map(|(k, v)| format!("{} = {}", quote_ident(k), quote_literal(v)))
            .collect();
        format!(" WHERE {}", terms.join(" AND "))
    };
    let from = format!("{}{filter}", quote_ident(&table.table));
    let sql = |q: &str| run_sql(&table.db, q, Format::Csv, &lake.server, &lake.data);
    let answer = run_sql(
        &table.db,
        &format!("SELECT * FROM {from} ORDER BY time"),
        Format::Arrow,
        &lake.server,
        &lake.data,
    )?;
    let batches = doppel_server::query::read_arrow(&answer).map_err(anyhow::Error::msg)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows == 0 {
        bail!("`{spec}`: no rows");
    }
    // Several series at one time stamp: the table holds more than one machine.
    let times = distinct_times(&batches);
    if times != rows {
        bail!(
            "`{spec}`: {rows} rows at {times} distinct times: the table holds several series; {}",
            pick_one_hint(&spec, &table, &from, &sql)?
        );
    }
    Ok(recording_from_batches(
        Path::new(&*spec),
        &batches,
        options,
    )?)
}

/// How many distinct values the batches' `time` column holds.
fn distinct_times(batches: &[doppel_model::data::Batch]) -> usize {
    let mut times: Vec<i64> = batches
        .iter()
        .flat_map(doppel_model::data::times_of)
        .collect();
    times.sort_unstable();
    times.dedup();
    times.len()
}

/// How to pick one series of a table holding several: the inputs that name each (its text
/// columns, the tags, as `?tag=value`), listed ready to paste, a few at most.
fn pick_one_hint(
    spec: &str,
    table: &LakeInput,
    from: &str,
    sql: &dyn Fn(&str) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<String> {
    const SHOWN: usize = 8;
    let columns = String::from_utf8(sql(&format!(
        "SELECT column_name FROM information_schema.columns WHERE table_name = {} \
         AND data_type = 'Utf8' ORDER BY ordinal_position",
        quote_literal(&table.table)
    ))?)?;
    let tags: Vec<&str> = columns
        .lines()
        .skip(1)
        .filter(|c| !table.filters.iter().any(|(k, _)| k == c))
        .collect();
    if tags.is_empty() {
        return Ok(
            "it has no tag to pick one by, so several rows share a time stamp: \
                   write each machine with its own tag (such as asset=...)"
                .into(),
        );
    }
    let list = tags
        .iter()
        .map(|t| quote_ident(t))
        .collect::<Vec<_>>()
        .join(", ");
    let found = String::from_utf8(sql(&format!(
        "SELECT DISTINCT {list} FROM {from} ORDER BY {list} LIMIT {}",
        SHOWN + 1
    ))?)?;
    let rows: Vec<&str> = found.lines().skip(1).collect();
    let base = match spec.split_once('?') {
        Some((base, query)) => format!("{base}?{query}&"),
        None => format!("{spec}?"),
    };
    let mut inputs: Vec<String> = rows
        .iter()
        .take(SHOWN)
        .map(|row| {
            let pairs: Vec<String> = tags
                .iter()
                .zip(row.split(','))
                .filter(|(_, v)| !v.is_empty())
                .map(|(t, v)| format!("{t}={v}"))
                .collect();
            format!("{base}{}", pairs.join("&"))
        })
        .collect();
    if rows.len() > SHOWN {
        inputs.push("...".into());
    }
    Ok(format!(
        "pick one by its tags, such as: {}",
        inputs.join("  ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lake_inputs_parse_and_bad_ones_say_why() {
        let t = parse("lake:plant/pumps?asset=pump-1&site=a")
            .unwrap()
            .unwrap();
        assert_eq!((t.db.as_str(), t.table.as_str()), ("plant", "pumps"));
        assert_eq!(t.filters.len(), 2);
        assert!(parse("data/file.csv").unwrap().is_none());
        let e = parse("lake:plant").err().unwrap().to_string();
        assert!(e.contains("lake:DB/TABLE"), "{e}");
        let e = parse("lake:plant/pumps?asset").err().unwrap().to_string();
        assert!(e.contains("not tag=value"), "{e}");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
