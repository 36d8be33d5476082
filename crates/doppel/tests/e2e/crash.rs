//! SIGKILL while writing: every acknowledged batch survives, nothing half-written appears.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;

const LINES_PER_BATCH: usize = 200;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // A small flush size so persisting, WAL rotation and the kill can interleave.
    let server = Server::start(dir.path(), &["--flush-mib", "1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let url = format!("{}/api/v2/write?bucket=crash", server.url);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let agent = agent();
                let mut acknowledged = Vec::new();
                for batch in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut body = String::new();
                    for line in 0..LINES_PER_BATCH {
                        body.push_str(&format!(
                            "w,writer={writer},batch={batch} line={line}i,payload=\"{}\" {}\n",
                            "x".repeat(64),
                            line
                        ));
                    }
                    match agent.post(&url).send(body.as_str()) {
                        Ok(r) if r.status().as_u16() == 204 => acknowledged.push(batch),
                        _ => break, // the server is gone
                    }
                }
                acknowledged
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    server.kill();
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<Vec<u64>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(
        total > 10,
        "the writers got only {total} batches in before the kill"
    );

    let server = Server::start(dir.path(), &[]);
    let rows = sql(
        &server,
        "crash",
        "SELECT writer, batch, count(*) AS n FROM w GROUP BY writer, batch",
    );
    let mut found = std::collections::HashMap::new();
    for row in &rows {
        let n = row["n"].as_u64().unwrap() as usize;
        assert_eq!(n, LINES_PER_BATCH, "a half-written batch: {row}");
        found.insert(
            (
                row["writer"].as_str().unwrap().to_owned(),
                row["batch"].as_str().unwrap().to_owned(),
            ),
            n,
        );
    }
    for (writer, batches) in acknowledged.iter().enumerate() {
        for batch in batches {
            assert!(
                found.contains_key(&(writer.to_string(), batch.to_string())),
                "acknowledged batch {batch} of writer {writer} is lost"
            );
        }
    }
}
