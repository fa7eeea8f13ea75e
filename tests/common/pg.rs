//! A fresh schema in the scratch PostgreSQL for each test (`.ci/postgres.sh` starts one and sets
//! `LOCKERSTORE_PG_URL`). Without it the tests say so and do nothing, except under `CI`, which
//! must start one.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// The server's URL, or `None` (outside CI) when no server was started.
pub fn server() -> Option<String> {
    match std::env::var("LOCKERSTORE_PG_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must start PostgreSQL and set LOCKERSTORE_PG_URL (.ci/postgres.sh)"
            );
            eprintln!("no PostgreSQL (set LOCKERSTORE_PG_URL): PostgreSQL test not run");
            None
        }
    }
}

/// A URL whose connections work in a new, empty schema of their own.
pub fn fresh_schema(server: &str, label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "t_{}_{}_{}_{}",
        label.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut client = postgres::Client::connect(server, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let sep = if server.contains('?') { '&' } else { '?' };
    format!("{server}{sep}options=-csearch_path%3D{schema}")
}

/// Runs one SQL statement batch in the schema of `url`.
pub fn sql(url: &str, statements: &str) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client.batch_execute(statements).unwrap();
}

/// The first column of the first row of a query, as i64.
pub fn query_i64(url: &str, query: &str) -> i64 {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client.query_one(query, &[]).unwrap().get(0)
}
