//! The HTTP API in process: requests sent straight to `app()` over a real lake on real files,
//! no socket. The e2e tests drive the binary over loopback; these pin the API's contract
//! (status codes, bodies, formats) quickly and precisely.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use doppel_lake::{Lake, LakeConfig};
use doppel_server::{ServerConfig, app, query::read_arrow};
use tower::ServiceExt;

struct Api {
    router: Router,
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

impl Api {
    fn new(config: ServerConfig) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), LakeConfig::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Api {
            router: app(lake, config),
            runtime,
            dir,
        }
    }

    fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(Body::from(body.to_owned())).unwrap();
        self.runtime.block_on(async {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec();
            Answer {
                status,
                headers,
                body,
            }
        })
    }

    fn write(&self, lines: &str) -> Answer {
        self.send(
            Method::POST,
            "/api/v2/write?bucket=plant&precision=s",
            &[],
            lines,
        )
    }

    fn sql(&self, q: &str, format: &str) -> Answer {
        let body = serde_json::json!({"db": "plant", "q": q, "format": format}).to_string();
        self.send(
            Method::POST,
            "/api/v3/query_sql",
            &[("Content-Type", "application/json")],
            &body,
        )
    }
}

/// A write is acknowledged with 204 and read back at once, in JSON and as an Arrow stream
/// with the columns' own types; a bad line is a 400 that names its line, and writes nothing.
#[test]
fn writes_read_back_as_json_and_arrow() {
    let api = Api::new(ServerConfig::default());
    let ok = api
        .write("pumps,asset=p1 speed=0.5,on=true 1700000000\npumps,asset=p2 speed=0.7 1700000001");
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.text());
    let rows = api
        .sql("SELECT asset, speed FROM pumps ORDER BY time", "json")
        .json();
    assert_eq!(
        rows,
        serde_json::json!([{"asset": "p1", "speed": 0.5}, {"asset": "p2", "speed": 0.7}])
    );

    let arrow = api.sql("SELECT * FROM pumps ORDER BY time", "arrow");
    assert_eq!(
        arrow.headers[header::CONTENT_TYPE],
        "application/vnd.apache.arrow.stream"
    );
    let batches = read_arrow(&arrow.body).unwrap();
    let schema = batches[0].schema();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    assert_eq!(
        schema
            .field_with_name("speed")
            .unwrap()
            .data_type()
            .to_string(),
        "Float64"
    );
    assert_eq!(
        schema
            .field_with_name("on")
            .unwrap()
            .data_type()
            .to_string(),
        "Boolean"
    );

    let bad = api.write("pumps,asset=p3 speed=fast 1700000002\npumps,asset=p4 speed=1 1700000003");
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("line 1"), "{}", bad.text());
    let count = api.sql("SELECT count(*) AS n FROM pumps", "json").json();
    assert_eq!(count[0]["n"], 2, "a rejected batch wrote nothing");
}

/// A client's mistakes are 4xx and say what to do; the unknown is 404, what changes the lake
/// through SQL is refused with the supported way.
#[test]
fn mistakes_get_4xx_that_say_what_to_do() {
    let api = Api::new(ServerConfig::default());
    assert_eq!(api.write("m v=1 1700000000").status, StatusCode::NO_CONTENT);
    let unknown = api.send(
        Method::POST,
        "/api/v3/query_sql",
        &[("Content-Type", "application/json")],
        r#"{"db": "nowhere", "q": "SELECT 1"}"#,
    );
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text());
    let typo = api.sql("SELEC * FROM m", "json");
    assert_eq!(typo.status, StatusCode::BAD_REQUEST);
    let drop = api.sql("DROP TABLE m", "json");
    assert_eq!(drop.status, StatusCode::BAD_REQUEST);
    assert!(drop.text().contains("doppel lake drop"), "{}", drop.text());
    let format = api.sql("SELECT * FROM m", "xml");
    assert_eq!(format.status, StatusCode::BAD_REQUEST);
    assert!(
        format.text().contains("json, jsonl, csv, pretty or arrow"),
        "{}",
        format.text()
    );
}

/// With a token, a request without it is 401 with a challenge, and with it goes through.
#[test]
fn a_token_guards_every_endpoint() {
    let api = Api::new(ServerConfig {
        token: Some("s3cret".into()),
        ..ServerConfig::default()
    });
    let denied = api.write("m v=1 1700000000");
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert!(denied.headers.contains_key(header::WWW_AUTHENTICATE));
    let allowed = api.send(
        Method::POST,
        "/api/v2/write?bucket=plant&precision=s",
        &[("Authorization", "Token s3cret")],
        "m v=1 1700000000",
    );
    assert_eq!(allowed.status, StatusCode::NO_CONTENT, "{}", allowed.text());
}

/// The dashboard's page and files are inside the binary and served without a token (they
/// hold no data); `/dashboard/auth` tells the page to ask for the token; the API behind it
/// stays guarded; an unknown file is 404.
#[test]
fn the_dashboard_is_served_without_data_and_the_api_behind_it_is_guarded() {
    let api = Api::new(ServerConfig {
        token: Some("s3cret".into()),
        ..ServerConfig::default()
    });
    let page = api.send(Method::GET, "/", &[], "");
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().contains("/dashboard/app.js"), "{}", page.text());
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("uplot.min.js", "text/javascript"),
        ("uplot.LICENSE", "text/plain"),
    ] {
        let answer = api.send(Method::GET, &format!("/dashboard/{file}"), &[], "");
        assert_eq!(answer.status, StatusCode::OK, "{file}");
        assert!(
            answer.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{file}"
        );
    }
    let auth = api.send(Method::GET, "/dashboard/auth", &[], "");
    assert_eq!(auth.json(), serde_json::json!({"token_required": true}));
    assert_eq!(
        api.send(Method::GET, "/dashboard/secrets", &[], "").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.send(Method::GET, "/api/v1/twin", &[], "").status,
        StatusCode::UNAUTHORIZED
    );
    let open = Api::new(ServerConfig::default());
    let auth = open.send(Method::GET, "/dashboard/auth", &[], "");
    assert_eq!(auth.json(), serde_json::json!({"token_required": false}));
}

/// Planning: the scenario library, a draft checked with the CLI's errors, a study run as a
/// job to its result (scenario and baseline distributions) and kept in the data folder, and
/// cancelling one that is over refused.
#[test]
fn scenario_studies_run_as_jobs_and_are_kept() {
    let api = Api::new(ServerConfig::default());
    let library = api.send(Method::GET, "/api/v1/scenarios", &[], "").json();
    let names: Vec<&str> = library
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    // The library is every file of the repository's scenarios/, by name.
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut files: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    files.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, files);
    let json = [("Content-Type", "application/json")];
    let draft = |text: &str| {
        api.send(
            Method::POST,
            "/api/v1/scenarios/check",
            &json,
            &serde_json::json!({ "text": text }).to_string(),
        )
    };
    let good = draft(
        "name = \"t\"\ndescription = \"d\"\n\n[[disruption]]\nkind = \"pump_trip\"\nstart = \"1d\"\nasset = \"pump2\"\n",
    );
    assert_eq!(good.status, StatusCode::OK, "{}", good.text());
    assert!(good.text().contains("pump2 trips"), "{}", good.text());
    let bad = draft("name = \"t\"\n\n[[disruption]]\nkind = \"pump_trap\"\n");
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("pump_trap"), "{}", bad.text());
    let refused = api.send(
        Method::POST,
        "/api/v1/scenario-runs",
        &json,
        r#"{"scenario": "heatwave", "runs": 0}"#,
    );
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refused.text()
    );
    let started = api.send(
        Method::POST,
        "/api/v1/scenario-runs",
        &json,
        r#"{"scenario": "pump_trip", "runs": 4, "days": 2}"#,
    );
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text());
    let id = started.json()["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut run = serde_json::Value::Null;
    while std::time::Instant::now() < deadline {
        run = api
            .send(Method::GET, &format!("/api/v1/scenario-runs/{id}"), &[], "")
            .json();
        if run["summary"]["state"] != "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(run["summary"]["state"], "done", "{run}");
    assert_eq!(run["summary"]["done"], 4, "{run}");
    let result = &run["result"];
    assert_eq!(result["runs"], 4, "{result}");
    assert!(
        result["scenario"]["energy_kwh"]["p50"].is_number(),
        "{result}"
    );
    assert!(
        result["baseline"]["energy_kwh"]["p50"].is_number(),
        "{result}"
    );
    let listed = api
        .send(Method::GET, "/api/v1/scenario-runs", &[], "")
        .json();
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert!(
        api.dir
            .path()
            .join(format!(".scenario-runs/{id}.json"))
            .exists(),
        "kept in the data folder"
    );
    let again = api.send(
        Method::POST,
        &format!("/api/v1/scenario-runs/{id}/cancel"),
        &[],
        "",
    );
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert_eq!(
        api.send(Method::GET, "/api/v1/scenario-runs/nope", &[], "")
            .status,
        StatusCode::NOT_FOUND
    );
}

/// Dropping through the API: a dry run says what would go and changes nothing; the drop
/// removes the table; a column drop frees the column's type; tags are refused.
#[test]
fn tables_and_columns_are_dropped_through_the_api() {
    let api = Api::new(ServerConfig::default());
    let lines = "m,a=x v=\"oops\",w=1 1700000000\nother,a=y v=2 1700000000";
    assert_eq!(api.write(lines).status, StatusCode::NO_CONTENT);
    let look = api.send(
        Method::DELETE,
        "/api/v3/configure/column?db=plant&table=m&column=v&dry_run=true",
        &[],
        "",
    );
    assert_eq!(look.status, StatusCode::OK, "{}", look.text());
    assert_eq!(look.json()["applied"], false);
    assert_eq!(look.json()["effect"]["rows"], 1);
    assert_eq!(
        api.write("m,a=x v=1.5 1700000001").status,
        StatusCode::BAD_REQUEST
    );

    let done = api.send(
        Method::DELETE,
        "/api/v3/configure/column?db=plant&table=m&column=v",
        &[],
        "",
    );
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(done.json()["effect"]["values"], 1);
    assert_eq!(
        api.write("m,a=x v=1.5 1700000001").status,
        StatusCode::NO_CONTENT
    );

    let tag = api.send(
        Method::DELETE,
        "/api/v3/configure/column?db=plant&table=m&column=a",
        &[],
        "",
    );
    assert_eq!(tag.status, StatusCode::BAD_REQUEST);
    assert!(tag.text().contains("is a tag"), "{}", tag.text());
    let missing = api.send(
        Method::DELETE,
        "/api/v3/configure/column?db=plant&table=m",
        &[],
        "",
    );
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);

    let table = api.send(
        Method::DELETE,
        "/api/v3/configure/table?db=plant&table=m",
        &[],
        "",
    );
    assert_eq!(table.status, StatusCode::OK, "{}", table.text());
    let tables = api.sql("SHOW TABLES", "json").json();
    let names: Vec<&str> = tables
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["table_schema"] == "public")
        .map(|t| t["table_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other"]);
}
