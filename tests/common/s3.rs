//! A fresh prefix in the scratch S3 bucket for each test (`.ci/seaweedfs.sh` starts SeaweedFS
//! and sets `LOCKERSTORE_S3_ENDPOINT`, `LOCKERSTORE_S3_BUCKET` and the AWS credentials).
//! Without it the tests say so and do nothing, except under `CI`, which must start one.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use lockerstore::ObjectLocation;

/// A new, empty prefix in the scratch bucket, or `None` (outside CI) without a server.
pub fn location(label: &str) -> Option<ObjectLocation> {
    let Ok(endpoint) = std::env::var("LOCKERSTORE_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must start an S3 server and set LOCKERSTORE_S3_ENDPOINT"
        );
        eprintln!("no S3 server (set LOCKERSTORE_S3_ENDPOINT): object-store test not run");
        return None;
    };
    static N: AtomicU64 = AtomicU64::new(0);
    let bucket = std::env::var("LOCKERSTORE_S3_BUCKET").unwrap_or_else(|_| "packs".into());
    let prefix = format!(
        "{label}-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    Some(
        ObjectLocation::new(format!("s3://{bucket}/{prefix}"))
            .endpoint(endpoint)
            .region("us-east-1")
            .allow_http(true),
    )
}

/// A client of the location's bucket, and the location's prefix in it.
pub fn client(loc: &ObjectLocation) -> (object_store::aws::AmazonS3, String) {
    let rest = loc.url.strip_prefix("s3://").unwrap();
    let (bucket, prefix) = rest.split_once('/').unwrap();
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_endpoint(loc.endpoint.clone().unwrap())
        .with_region("us-east-1")
        .with_allow_http(true)
        .build()
        .unwrap();
    (s3, prefix.to_owned())
}
