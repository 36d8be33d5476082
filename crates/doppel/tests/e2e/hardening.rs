//! What an attacker or bad luck tries against a running server: writes through SQL, deep
//! expressions, endless queries, odd bodies, empty tokens, idle and slow sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::common::*;

fn query(server: &Server, q: &str) -> Reply {
    let body = serde_json::json!({"db": "plant", "q": q}).to_string();
    post(
        &format!("{}/api/v3/query_sql", server.url),
        &[("Content-Type", "application/json")],
        body,
    )
}

fn write(server: &Server, body: impl AsRef<[u8]>, headers: &[(&str, &str)]) -> Reply {
    post(
        &format!("{}/api/v2/write?bucket=plant&precision=s", server.url),
        headers,
        body,
    )
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn parquet_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn queries_cannot_write_files_or_reach_outside_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    assert_eq!(
        write(&server, "m,a=x v=1 1700000000\nm,a=y v=2 1700000000", &[]).status,
        204
    );
    server = {
        server.stop();
        Server::start(dir.path(), &[])
    };
    let before = parquet_files(dir.path());
    let (target, _) = before
        .first()
        .expect("the rows were persisted at shutdown")
        .clone();
    let outside = dir.path().join("outside.parquet");
    for q in [
        format!(
            "COPY (SELECT 'forged' AS a, 9.0 AS v) TO '{}' STORED AS PARQUET",
            target.display()
        ),
        format!("COPY m TO '{}'", outside.display()),
        format!("EXPLAIN ANALYZE COPY m TO '{}'", outside.display()),
        format!(
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}'",
            target.display()
        ),
        "CREATE TABLE t AS SELECT 1".into(),
        "INSERT INTO m VALUES ('z', 3.0, now())".into(),
        "DROP TABLE m".into(),
        "SET datafusion.execution.batch_size = 1".into(),
        "SELECT 1; SELECT 2".into(),
    ] {
        let r = query(&server, &q);
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(
            r.body.contains("read-only") || r.body.contains("one statement"),
            "{q}: {}",
            r.body
        );
    }
    // A file path as a table is not a way in either.
    let r = query(&server, &format!("SELECT * FROM '{}'", target.display()));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        parquet_files(dir.path()),
        before,
        "a query changed the lake's files"
    );
    assert!(!outside.exists());
    let rows = sql(&server, "plant", "SELECT a, v FROM m ORDER BY a");
    assert_eq!(rows.len(), 2, "{rows:?}");
}

#[test]
fn deep_expressions_get_400_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(write(&server, "m,a=x v=1 1700000000", &[]).status, 204);
    let plus = format!("SELECT 1{}", "+1".repeat(910));
    let ors = format!(
        "SELECT * FROM m WHERE v = 0{}",
        (1..2000)
            .map(|i| format!(" OR v = {i}"))
            .collect::<String>()
    );
    let parens = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let huge = format!("SELECT 1{}", "+1".repeat(400_000));
    for q in [&plus, &ors, &parens, &huge] {
        let r = query(&server, q);
        assert_eq!(r.status, 400, "{}", &r.body[..r.body.len().min(300)]);
    }
    assert_eq!(get(&format!("{}/ping", server.url), &[]).status, 204);
    let rows = sql(&server, "plant", "SELECT v FROM m WHERE v IN (0, 1, 2)");
    assert_eq!(rows.len(), 1);
}

/// CPU seconds the process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn a_query_is_stopped_by_its_time_limit_or_when_its_client_leaves() {
    let dir = tempfile::tempdir().unwrap();
    // The time limit on a server of its own: with the default memory limit the endless join
    // meets the time limit first however fast the machine (at 64 MiB a fast one filled the
    // memory limit within the two seconds).
    let server = Server::start(dir.path(), &["--query-timeout", "2s"]);
    let lines: String = (0..20_000)
        .map(|t| format!("m,a=x v={t} {}\n", 1_700_000_000 + t))
        .collect();
    assert_eq!(write(&server, lines, &[]).status, 204);
    // Every row has the same tag: 8 * 10^12 joined rows.
    let endless = "SELECT count(*) FROM m x JOIN m y ON x.a = y.a JOIN m z ON y.a = z.a";

    // The time limit: a 400 that says which limit.
    let started = Instant::now();
    let r = query(&server, endless);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("--query-timeout"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(30));

    // The memory limit: a result too large for it fails the query, not the server.
    assert!(server.stop().success());
    let server = Server::start(dir.path(), &["--query-memory-mib", "64"]);
    let r = query(&server, "SELECT x.v, y.v FROM m x, m y");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("memory"), "{}", r.body);

    // A join that would compare rows for minutes without a batch to yield on: refused.
    let r = query(
        &server,
        "SELECT count(*) FROM m x, m y, m z WHERE x.v + y.v + z.v < 0",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("row pairs"), "{}", r.body);

    // A client that hangs up: the server stops working on its query.
    let slow = Server::start(
        dir.path().join("slow").as_path(),
        &["--query-timeout", "10m"],
    );
    let lines: String = (0..20_000)
        .map(|t| format!("m,a=x v={t} {}\n", 1_700_000_000 + t))
        .collect();
    assert_eq!(write(&slow, lines, &[]).status, 204);
    let body = serde_json::json!({"db": "plant", "q": endless}).to_string();
    let mut socket = TcpStream::connect(("127.0.0.1", slow.port)).unwrap();
    write!(
        socket,
        "POST /api/v3/query_sql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = slow.child.id();
    let busy = cpu_seconds(pid);
    // Running: it spends CPU (given up to 5 s, since other work may share the cores).
    let began = std::time::Instant::now();
    while cpu_seconds(pid) - busy <= 0.2 && began.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cpu_seconds(pid) - busy > 0.2, "the query was not running");
    // While it runs, the server still answers at once.
    assert_eq!(get(&format!("{}/ping", slow.url), &[]).status, 204);
    drop(socket);
    std::thread::sleep(Duration::from_millis(1500));
    let idle = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(pid) - idle;
    assert!(
        used < 0.3,
        "{used} CPU seconds in 2 s after the client left"
    );
}

#[test]
fn odd_write_bodies_are_refused_and_every_gzip_member_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let gz = [("Content-Encoding", "gzip")];

    let r = write(&server, "", &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("empty"), "{}", r.body);
    let r = write(&server, "\n# only a comment\n\n", &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = get(
        &format!("{}/api/v3/query_sql?db=plant&q=SELECT%201", server.url),
        &[],
    );
    assert_eq!(
        r.status, 404,
        "an empty write created the database: {}",
        r.body
    );

    let mut two = gzip("m,a=x v=1 1700000000\n");
    two.extend(gzip("m,a=y v=2 1700000000\n"));
    assert_eq!(write(&server, &two, &gz).status, 204);
    let rows = sql(&server, "plant", "SELECT a FROM m ORDER BY a");
    assert_eq!(rows.len(), 2, "both gzip members are stored: {rows:?}");

    let mut trailing = gzip("m,a=z v=3 1700000000\n");
    trailing.extend_from_slice(b"garbage after the stream");
    let r = write(&server, &trailing, &gz);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("gzip"), "{}", r.body);
    let r = write(&server, "m,a=z v=3 1700000000", &gz);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(sql(&server, "plant", "SELECT a FROM m").len(), 2);

    let long = format!("{} v=1 1700000000", "x".repeat(300));
    let r = write(&server, &long, &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("255"), "{}", r.body);
    // The lake still persists and stops cleanly.
    assert!(server.stop().success());
}

#[test]
fn an_empty_token_is_refused_and_401_says_how_to_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    for env in [false, true] {
        let mut command = doppel();
        command.args([
            "serve",
            "--data",
            dir.path().to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ]);
        if env {
            command.env("DOPPEL_TOKEN", "");
        } else {
            command.args(["--token", ""]);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("token is empty"), "{stderr}");
    }
    let server = Server::start(dir.path(), &["--token", "s3cret"]);
    let r = get(&format!("{}/health", server.url), &[]);
    assert_eq!(r.status, 401);
    let challenge = r.headers.get("www-authenticate").unwrap().to_str().unwrap();
    assert!(
        challenge.contains("Token") && challenge.contains("Bearer"),
        "{challenge}"
    );
}

/// Reads until the server closes the connection (or 10 s pass); returns what it sent.
fn read_until_closed(socket: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::new();
    let _ = socket.read_to_end(&mut out);
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn idle_half_sent_and_slow_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
            "--max-connections",
            "8",
        ],
    );
    // Idle: nothing sent at all.
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let (_, took) = read_until_closed(&mut idle);
    assert!(
        took < Duration::from_secs(8),
        "an idle connection stayed open {took:?}"
    );
    // Half-sent headers.
    let mut half = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    half.write_all(b"POST /api/v2/write?bucket=plant HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (_, took) = read_until_closed(&mut half);
    assert!(
        took < Duration::from_secs(8),
        "half-sent headers held {took:?}"
    );
    // A body that never finishes: 408.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(
        b"POST /api/v2/write?bucket=plant HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nm v=1",
    )
    .unwrap();
    let (answer, _) = read_until_closed(&mut slow);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // More sockets than the bound, all idle: once they are cut, the server answers again.
    let hogs: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(get(&format!("{}/ping", server.url), &[]).status, 204);
    drop(hogs);
}

#[test]
fn commands_beside_a_running_server_ask_it_instead_of_failing_on_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    assert_eq!(write(&server, "m,a=x v=1 1700000000", &[]).status, 204);
    let announced = std::fs::read_to_string(data.join("SERVER.json")).unwrap();
    assert!(announced.contains(&server.url), "{announced}");

    let data_arg = data.to_str().unwrap();
    let rows = doppel_ok(&[
        "query",
        "--data",
        data_arg,
        "--db",
        "plant",
        "--format",
        "csv",
        "SELECT a, v FROM m",
    ]);
    assert_eq!(rows, "a,v\nx,1.0\n");

    let csv = dir.path().join("more.csv");
    std::fs::write(&csv, "time,v\n2024-01-01T00:00:00Z,2.5\n").unwrap();
    doppel_ok(&[
        "import",
        "--data",
        data_arg,
        "--db",
        "history",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(sql(&server, "history", "SELECT v FROM more").len(), 1);

    assert!(server.stop().success());
    assert!(
        !data.join("SERVER.json").exists(),
        "a stopped server still announces itself"
    );
}

#[test]
fn retention_says_what_it_removes_and_asks_before_removing_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let server = Server::start(dir.path(), &[]);
    let body = format!("m,a=x v=1 {}\nm,a=x v=2 {}\n", now - 40 * 86_400, now);
    assert_eq!(write(&server, body, &[]).status, 204);
    assert!(server.stop().success());

    let retention_for = |period: &str, extra: &[&str]| {
        doppel()
            .args([
                "retention",
                "--data",
                data,
                "--db",
                "plant",
                "--table",
                "m",
                period,
            ])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let retention = |extra: &[&str]| retention_for("30d", extra);
    let out = retention(&["--dry-run"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("removes 1 of 2 file(s), 1 of 2 row(s)"),
        "{said}"
    );
    assert!(said.contains("nothing changed"), "{said}");
    // No terminal to ask on and no --yes: refused, nothing removed.
    let out = retention(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let count = || {
        doppel_ok(&[
            "query",
            "--data",
            data,
            "--db",
            "plant",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM m",
        ])
    };
    assert_eq!(count(), "n\n2\n");
    let out = retention(&["--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(), "n\n1\n");

    // With a doppel serving the directory, the same commands go through it.
    let server = Server::start(dir.path(), &[]);
    let body = format!("m,a=y v=3 {}\n", now - 20 * 86_400);
    assert_eq!(write(&server, body, &[]).status, 204);
    assert!(server.stop().success());
    let server = Server::start(dir.path(), &[]);
    let out = retention_for("10d", &["--dry-run"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("removes 1 of 2 file(s), 1 of 2 row(s)"),
        "{said}"
    );
    let out = retention_for("10d", &["--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sql(&server, "plant", "SELECT v FROM m").len(), 1);
}

/// Runs `doppel ARGS`, which must succeed; returns what it printed.
fn doppel_ok(args: &[&str]) -> String {
    let out = doppel().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "doppel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lake_check_names_a_parquet_file_damaged_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        write(&server, "m,a=x v=1 1700000000\nm,a=y v=2 1700000001", &[]).status,
        204
    );
    assert!(server.stop().success());
    let said = doppel_ok(&["lake", "check", "--data", data]);
    assert!(said.contains("1 file(s) read: every one matches"), "{said}");

    let (file, mut bytes) = parquet_files(dir.path()).remove(0);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&file, bytes).unwrap();
    let out = doppel()
        .args(["lake", "check", "--data", data])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&file.display().to_string()) && said.contains("checksum"),
        "{said}"
    );
}

/// A column whose type one bad write fixed is freed with `doppel lake drop --column`, beside
/// the running doppel (found through its SERVER.json): the writes refused before are then
/// accepted. A table written by mistake goes with `doppel lake drop`; a dry run changes
/// nothing, and without a terminal or --yes nothing is dropped. SQL's DROP TABLE points here.
#[test]
fn a_column_fixed_by_one_bad_write_is_repaired_and_a_table_dropped_beside_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        write(&server, "m,a=x v=\"oops\",w=1 1700000000", &[]).status,
        204
    );
    let floats = "m,a=x v=1.5,w=2 1700000001";
    assert_eq!(write(&server, floats, &[]).status, 400);

    let lake_drop = |extra: &[&str]| {
        doppel()
            .args([
                "lake", "drop", "--data", data, "--db", "plant", "--table", "m",
            ])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = lake_drop(&["--column", "v", "--dry-run"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("column `v` of plant.m") && said.contains("1 row(s)"),
        "{said}"
    );
    let out = lake_drop(&["--column", "v"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(
        write(&server, floats, &[]).status,
        400,
        "a dry run changed the lake"
    );

    let out = lake_drop(&["--column", "v", "--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 value(s) removed"));
    assert_eq!(write(&server, floats, &[]).status, 204);
    let rows = sql(&server, "plant", "SELECT v, w FROM m ORDER BY time");
    assert_eq!(rows.len(), 2);
    assert!(rows[0].get("v").is_none_or(|v| v.is_null()), "{rows:?}");
    assert_eq!(rows[1]["v"], 1.5);

    let refused = post(
        &format!("{}/api/v3/query_sql", server.url),
        &[("Content-Type", "application/json")],
        r#"{"db": "plant", "q": "DROP TABLE m"}"#,
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains("doppel lake drop"),
        "{}",
        refused.body
    );

    let out = lake_drop(&["--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = sql(&server, "plant", "SHOW TABLES");
    assert!(!tables.iter().any(|t| t["table_name"] == "m"), "{tables:?}");
}
