//! The InfluxDB-compatible HTTP API over a real socket.

use std::io::Write;

use crate::common::*;

fn write(server: &Server, query: &str, body: &str) -> Reply {
    post(&format!("{}{query}", server.url), &[], body)
}

#[test]
fn write_v2_and_v1_then_query_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let r = write(
        &server,
        "/api/v2/write?bucket=plant&org=acme&precision=s",
        "pumps,asset=p1 speed=0.5,on=true,starts=3i 1700000000\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = write(
        &server,
        "/write?db=plant&precision=ms",
        "pumps,asset=p2 speed=0.25,on=false,starts=4i 1700000000000",
    );
    assert_eq!(r.status, 204, "{}", r.body);

    let rows = sql(
        &server,
        "plant",
        "SELECT asset, speed, \"on\", starts, time FROM pumps ORDER BY asset",
    );
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["asset"], "p1");
    assert_eq!(rows[0]["speed"], 0.5);
    assert_eq!(rows[0]["on"], true);
    assert_eq!(rows[1]["starts"], 4);
    assert_eq!(rows[0]["time"], "2023-11-14T22:13:20");

    let base = format!(
        "{}/api/v3/query_sql?db=plant&q=SELECT%20asset%2C%20speed%20FROM%20pumps%20ORDER%20BY%20asset",
        server.url
    );
    let csv = get(&format!("{base}&format=csv"), &[]);
    assert_eq!(csv.body, "asset,speed\np1,0.5\np2,0.25\n");
    let jsonl = get(&format!("{base}&format=jsonl"), &[]);
    assert_eq!(
        jsonl.body,
        "{\"asset\":\"p1\",\"speed\":0.5}\n{\"asset\":\"p2\",\"speed\":0.25}\n"
    );
    let pretty = get(&format!("{base}&format=pretty"), &[]);
    assert!(pretty.body.contains("| p1    | 0.5   |"), "{}", pretty.body);
    let bad = get(&format!("{base}&format=xml"), &[]);
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("unknown format `xml`"));

    let tables = sql(&server, "plant", "SHOW TABLES");
    assert!(tables.iter().any(|t| t["table_name"] == "pumps"));
    let columns = sql(
        &server,
        "plant",
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'pumps' ORDER BY column_name",
    );
    let names: Vec<_> = columns
        .iter()
        .map(|c| c["column_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["asset", "on", "speed", "starts", "time"]);

    let missing = get(
        &format!("{}/api/v3/query_sql?db=nowhere&q=SELECT%201", server.url),
        &[],
    );
    assert_eq!(missing.status, 404);
    assert!(
        missing.json()["message"]
            .as_str()
            .unwrap()
            .contains("database `nowhere` not found")
    );
}

#[test]
fn a_bad_line_rejects_the_whole_batch_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let body = "m,a=1 v=1 1\nm,a=2 v=oops 2\nm,a=3 v=3 3\nm,a=4 4\n";
    let r = write(&server, "/api/v2/write?bucket=db", body);
    assert_eq!(r.status, 400);
    let json = r.json();
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["line_number"], 2);
    assert_eq!(data[0]["original_line"], "m,a=2 v=oops 2");
    assert!(
        data[0]["error_message"]
            .as_str()
            .unwrap()
            .contains("field `v` value `oops` is not a number")
    );
    assert_eq!(data[1]["line_number"], 4);
    // Nothing of it was written: the database does not even exist.
    let q = get(
        &format!("{}/api/v3/query_sql?db=db&q=SELECT%201", server.url),
        &[],
    );
    assert_eq!(q.status, 404);

    // With accept_partial the good lines go in and the bad ones are still reported.
    let r = write(&server, "/api/v2/write?bucket=db&accept_partial=true", body);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    assert_eq!(sql(&server, "db", "SELECT count(*) AS n FROM m")[0]["n"], 2);
}

#[test]
fn field_type_conflicts_are_400_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        write(&server, "/api/v2/write?bucket=db", "m v=1 1").status,
        204
    );
    let r = write(&server, "/api/v2/write?bucket=db", "m v=2 2\nm v=3i 3");
    assert_eq!(r.status, 400);
    let json = r.json();
    assert_eq!(json["data"][0]["line_number"], 2);
    assert_eq!(json["data"][0]["original_line"], "m v=3i 3");
    assert!(
        json["data"][0]["error_message"]
            .as_str()
            .unwrap()
            .contains("field type conflict")
    );
    assert_eq!(
        sql(&server, "db", "SELECT count(*) AS n FROM m")[0]["n"],
        1,
        "the batch was atomic"
    );
    // A conflict with the stored schema (not within the batch) names its line as well, also
    // after a multi-line string earlier in the body.
    let body = "m s=\"two\nlines\" 4\nm v=5i 5\nm w=6 6\n";
    let r = write(&server, "/api/v2/write?bucket=db", body);
    assert_eq!(r.status, 400);
    let json = r.json();
    assert_eq!(json["data"].as_array().unwrap().len(), 1);
    assert_eq!(json["data"][0]["line_number"], 3);
    assert_eq!(json["data"][0]["original_line"], "m v=5i 5");
    assert!(
        json["data"][0]["error_message"]
            .as_str()
            .unwrap()
            .contains("`m.v` is float but this line writes integer")
    );
    assert_eq!(sql(&server, "db", "SELECT count(*) AS n FROM m")[0]["n"], 1);
    let r = write(&server, "/api/v2/write?bucket=db&accept_partial=true", body);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["data"][0]["line_number"], 3);
    assert_eq!(
        sql(&server, "db", "SELECT count(*) AS n FROM m")[0]["n"],
        3,
        "the other two lines were written"
    );
}

fn gzip(text: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

#[test]
fn gzip_bodies_and_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-body-mib", "1"]);
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(&format!("m,s=x v={i} {i}\n"));
    }
    let r = post(
        &format!("{}/api/v2/write?bucket=db", server.url),
        &[("Content-Encoding", "gzip")],
        gzip(&body),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        sql(&server, "db", "SELECT count(*) AS n, sum(v) AS s FROM m")[0]["s"],
        499500.0
    );

    // A 1.6 MB body is refused from its Content-Length alone, before it is sent (a client
    // that keeps sending after the answer may see its connection closed, as with InfluxDB).
    let big = "m v=1 1\n".repeat(200_000);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /api/v2/write?bucket=db HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .unwrap();
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut stream, &mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    drop(stream);
    // A small gzip that inflates past the limit is refused too.
    let r = post(
        &format!("{}/api/v2/write?bucket=db", server.url),
        &[("Content-Encoding", "gzip")],
        gzip(&big),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    let r = post(
        &format!("{}/api/v2/write?bucket=db", server.url),
        &[("Content-Encoding", "gzip")],
        "not gzip",
    );
    assert_eq!(r.status, 400);
}

#[test]
fn token_guards_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--token", "s3cret"]);
    let url = format!("{}/api/v2/write?bucket=db", server.url);
    assert_eq!(post(&url, &[], "m v=1 1").status, 401);
    assert_eq!(
        post(&url, &[("Authorization", "Token wrong")], "m v=1 1").status,
        401
    );
    assert_eq!(
        post(&url, &[("Authorization", "Token s3cret")], "m v=1 1").status,
        204
    );
    assert_eq!(
        post(&url, &[("Authorization", "Bearer s3cret")], "m v=2 2").status,
        204
    );
    assert_eq!(get(&format!("{}/ping", server.url), &[]).status, 401);
    assert_eq!(get(&format!("{}/health", server.url), &[]).status, 401);
    let q = format!(
        "{}/api/v3/query_sql?db=db&q=SELECT%20count(*)%20AS%20n%20FROM%20m",
        server.url
    );
    assert_eq!(get(&q, &[]).status, 401);
    let r = get(&q, &[("Authorization", "Token s3cret")]);
    assert_eq!(r.json()[0]["n"], 2);
    assert_eq!(
        post(
            &format!("{}/write?db=db&p=s3cret", server.url),
            &[],
            "m v=3 3"
        )
        .status,
        204
    );
}

#[test]
fn last_write_wins_over_http_and_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        write(&server, "/api/v2/write?bucket=db", "m,a=x v=1,w=10 5").status,
        204
    );
    assert_eq!(
        write(&server, "/api/v2/write?bucket=db", "m,a=x v=2 5").status,
        204
    );
    let rows = sql(&server, "db", "SELECT v, w FROM m");
    assert_eq!(rows, vec![serde_json::json!({"v": 2.0, "w": 10.0})]);
    assert!(server.stop().success());
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        sql(&server, "db", "SELECT v, w FROM m"),
        vec![serde_json::json!({"v": 2.0, "w": 10.0})]
    );
    assert_eq!(
        write(&server, "/api/v2/write?bucket=db", "m,a=x v=3 5").status,
        204
    );
    assert_eq!(
        sql(&server, "db", "SELECT v, w FROM m"),
        vec![serde_json::json!({"v": 3.0, "w": 10.0})]
    );
}

#[test]
fn ping_health_and_clear_start_up_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ping = get(&format!("{}/ping", server.url), &[]);
    assert_eq!(ping.status, 204);
    assert!(ping.headers.contains_key("x-influxdb-version"));
    let health = get(&format!("{}/health", server.url), &[]);
    assert_eq!(health.json()["status"], "pass");

    // The same data directory from a second process.
    let other = tempfile::tempdir().unwrap();
    let out = doppel()
        .args([
            "serve",
            "--data",
            dir.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another doppel process"),
        "{stderr}"
    );

    // The same port from a second process.
    let out = doppel()
        .args([
            "serve",
            "--data",
            other.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", server.port),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is already in use"), "{stderr}");

    // A public address without a token.
    let out = doppel()
        .args([
            "serve",
            "--data",
            other.path().to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a token"));
}

#[test]
fn a_full_buffer_answers_503_with_retry_after_and_then_drains() {
    let dir = tempfile::tempdir().unwrap();
    // A buffer limit of 0 MiB: any buffered write makes the next one wait for a persist.
    let server = Server::start(dir.path(), &["--max-buffer-mib", "0"]);
    let url = format!("{}/api/v2/write?bucket=db", server.url);
    let mut refused = 0;
    for i in 0..20 {
        let body = format!("m,s=x v={i} {i}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = post(&url, &[], &body);
            if r.status == 204 {
                break;
            }
            assert_eq!(r.status, 503, "{}", r.body);
            assert_eq!(r.headers.get("retry-after").unwrap(), "1");
            refused += 1;
            assert!(
                std::time::Instant::now() < deadline,
                "the buffer never drained"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    assert!(refused > 0, "no write was ever refused");
    assert_eq!(
        sql(&server, "db", "SELECT count(*) AS n FROM m")[0]["n"],
        20
    );
}
