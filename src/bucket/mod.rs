//! The bucket: a store's objects in an S3-compatible object store, reached through the
//! `object_store` crate on a small runtime of its own (feature `object-store`).
//!
//! This is the object store's I/O seam, as `vfs` is the file system's: a few blocking calls
//! (`get`, `head`, `put`, `list`, `delete`) on keys relative to the store's prefix, and the
//! prefix's claim (`STORE`). What the objects mean belongs to their users: packs
//! (`pack/object.rs`) and the metadata journal (`index/journal.rs`). docs/DESIGN.md section 13
//! has the layout.

pub(crate) mod outbox;

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// Where a store's packs live in an object store, as given at creation and kept in the store's
/// metadata. Credentials are never kept: they come from the usual AWS environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectLocation {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// An S3-compatible server's address (`http://127.0.0.1:8333`); AWS when unset.
    pub endpoint: Option<String>,
    /// The bucket's region; from the environment when unset.
    pub region: Option<String>,
    /// Allow plain HTTP (loopback test servers).
    pub allow_http: bool,
    /// Virtual-hosted-style requests (`bucket.host/key`) instead of path-style
    /// (`host/bucket/key`, what most self-hosted servers want).
    pub virtual_hosted: bool,
}

impl ObjectLocation {
    /// A location at `url` (`s3://bucket/prefix`), path-style, HTTPS only.
    pub fn new(url: impl Into<String>) -> ObjectLocation {
        ObjectLocation {
            url: url.into(),
            endpoint: None,
            region: None,
            allow_http: false,
            virtual_hosted: false,
        }
    }

    /// Sets the endpoint of an S3-compatible server.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets the region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Allows plain HTTP.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Uses virtual-hosted-style requests.
    pub fn virtual_hosted(mut self, virtual_hosted: bool) -> Self {
        self.virtual_hosted = virtual_hosted;
        self
    }

    /// The bucket and the key prefix of `url`.
    fn bucket_and_prefix(&self) -> Result<(String, String)> {
        let rest = self.url.strip_prefix("s3://").ok_or_else(|| {
            Error::InvalidOptions(format!(
                "object store URL {:?}: only s3://bucket[/prefix] is supported",
                self.url
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::InvalidOptions(format!(
                "object store URL {:?} names no bucket",
                self.url
            )));
        }
        Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
    }

    /// The encoding kept in the metadata: `key=value` lines, UTF-8 (docs/DESIGN.md).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = format!("url={}\n", self.url);
        if let Some(e) = &self.endpoint {
            out += &format!("endpoint={e}\n");
        }
        if let Some(r) = &self.region {
            out += &format!("region={r}\n");
        }
        out += &format!("allow_http={}\n", self.allow_http);
        out += &format!("virtual_hosted={}\n", self.virtual_hosted);
        out.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<ObjectLocation> {
        let bad = || Error::corrupted("the pack location in the metadata is malformed");
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let mut loc = ObjectLocation::new("");
        for line in text.lines() {
            let (k, v) = line.split_once('=').ok_or_else(bad)?;
            match k {
                "url" => loc.url = v.to_owned(),
                "endpoint" => loc.endpoint = Some(v.to_owned()),
                "region" => loc.region = Some(v.to_owned()),
                "allow_http" => loc.allow_http = v == "true",
                "virtual_hosted" => loc.virtual_hosted = v == "true",
                // Written by a later version: an option this one does not know.
                _ => return Err(bad()),
            }
        }
        if loc.url.is_empty() {
            return Err(bad());
        }
        Ok(loc)
    }
}

/// The bucket: an `object_store` client, the store's key prefix, and the small runtime its
/// async calls run on.
#[derive(Debug)]
pub(crate) struct Bucket {
    client: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    /// Taken by `Drop`, which shuts it down without waiting (a store may be dropped inside
    /// another runtime, where a blocking shutdown panics).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Bucket {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// How long one request may take: a pack of up to the size limit (64 MiB) must fit at slow
/// rates (object_store's default, 30 s, would make such packs impossible below ~2 MB/s).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

fn remote_error(what: &str, key: &str, e: object_store::Error) -> Error {
    Error::ObjectStore {
        operation: what.to_owned(),
        key: key.to_owned(),
        message: e.to_string(),
    }
}

/// How a PUT treats an object already under its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Put {
    /// Create-only (`If-None-Match: *`): an existing object is left alone and reported. A
    /// server that ignores the condition overwrites; callers stay correct either way.
    Create,
    /// Replace whatever is there.
    Overwrite,
}

/// What a PUT did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Written,
    /// A create-only PUT found an object under the key and wrote nothing.
    Exists,
}

impl Bucket {
    /// A client for `location`, or `client` when given (a test's).
    pub(crate) fn connect(
        location: &ObjectLocation,
        client: Option<Arc<dyn ObjectStore>>,
    ) -> Result<Bucket> {
        let (bucket, prefix) = location.bucket_and_prefix()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lockerstore-object-io")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the object store's runtime", "", e))?;
        let client = match client {
            Some(c) => c,
            None => Self::client(location, &bucket)?,
        };
        Ok(Bucket {
            client,
            prefix,
            url: location.url.clone(),
            runtime: Some(runtime),
        })
    }

    fn client(location: &ObjectLocation, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(location.allow_http)
            .with_virtual_hosted_style_request(location.virtual_hosted)
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(location.allow_http)
                    .with_timeout(REQUEST_TIMEOUT),
            );
        if let Some(e) = &location.endpoint {
            builder = builder.with_endpoint(e);
        }
        if let Some(r) = &location.region {
            builder = builder.with_region(r);
        }
        let client = builder
            .build()
            .map_err(|e| Error::InvalidOptions(format!("object store {}: {e}", location.url)))?;
        Ok(Arc::new(client))
    }

    /// The location's URL (`s3://bucket/prefix`), for messages.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Runs `f` on the runtime and waits for it, from any thread (also one of another tokio
    /// runtime's blocking threads, where `block_on` would panic).
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime
            .as_ref()
            .expect("the runtime lives until the bucket is dropped")
            .spawn(async move {
                let _ = tx.send(f.await);
            });
        rx.recv()
            .expect("the object store's runtime runs until the bucket is dropped")
    }

    /// The object key of `rel` (`packs/0000000000000001.pack`) under the store's prefix.
    fn path(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else if rel.is_empty() {
            ObjectPath::from(self.prefix.as_str())
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The object at `rel`, whole; `None` when there is none.
    pub(crate) fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        let key = self.path(rel);
        let client = self.client.clone();
        let k = key.clone();
        let got = self.run(async move {
            match client.get(&k).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            }
        });
        match got {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote_error("get", key.as_ref(), e)),
        }
    }

    /// Bytes `range` of the object at `rel` (one ranged GET); `None` when there is no object.
    /// A range past the object's end is an error of the server's.
    pub(crate) fn get_range(
        &self,
        rel: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Bytes>> {
        let key = self.path(rel);
        let client = self.client.clone();
        let k = key.clone();
        match self.run(async move { client.get_range(&k, range).await }) {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote_error("get", key.as_ref(), e)),
        }
    }

    /// The length of the object at `rel`; `None` when there is none.
    pub(crate) fn head(&self, rel: &str) -> Result<Option<u64>> {
        let key = self.path(rel);
        let client = self.client.clone();
        let k = key.clone();
        match self.run(async move { client.head(&k).await }) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote_error("head", key.as_ref(), e)),
        }
    }

    /// Writes `bytes` as the object at `rel`, whole (one PUT).
    pub(crate) fn put(&self, rel: &str, bytes: Bytes, mode: Put) -> Result<Written> {
        let key = self.path(rel);
        let client = self.client.clone();
        let k = key.clone();
        let put = self.run(async move {
            let options = PutOptions {
                mode: match mode {
                    Put::Create => PutMode::Create,
                    Put::Overwrite => PutMode::Overwrite,
                },
                ..PutOptions::default()
            };
            client.put_opts(&k, PutPayload::from(bytes), options).await
        });
        match put {
            Ok(_) => Ok(Written::Written),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Written::Exists),
            Err(e) => Err(remote_error("put", key.as_ref(), e)),
        }
    }

    /// The objects under the folder `rel` (recursively), as (name within it, length).
    pub(crate) fn list(&self, rel: &str) -> Result<Vec<(String, u64)>> {
        Ok(self
            .list_with_times(rel)?
            .into_iter()
            .map(|(name, len, _)| (name, len))
            .collect())
    }

    /// The same, with each object's last-modified time as the server states it.
    pub(crate) fn list_with_times(
        &self,
        rel: &str,
    ) -> Result<Vec<(String, u64, std::time::SystemTime)>> {
        use futures_util::TryStreamExt;
        let dir = self.path(rel);
        let client = self.client.clone();
        let d = dir.clone();
        let listed = self.run(async move {
            let prefix = (!d.as_ref().is_empty()).then_some(d);
            client
                .list(prefix.as_ref())
                .try_collect::<Vec<object_store::ObjectMeta>>()
                .await
        });
        let metas = listed.map_err(|e| remote_error("list", dir.as_ref(), e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m
                    .location
                    .prefix_match(&dir)?
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                Some((name, m.size, std::time::SystemTime::from(m.last_modified)))
            })
            .collect())
    }

    /// Deletes the object at `rel`; one already gone is not an error.
    pub(crate) fn delete(&self, rel: &str) -> Result<()> {
        let key = self.path(rel);
        let client = self.client.clone();
        let k = key.clone();
        match self.run(async move { client.delete(&k).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote_error("delete", key.as_ref(), e)),
        }
    }

    /// The store's `STORE` file as kept in `<prefix>/STORE`; `None` when the prefix has none.
    pub(crate) fn store_file(&self) -> Result<Option<Bytes>> {
        self.get(MARKER)
    }

    /// Makes sure the prefix is this store's: its `STORE` object equals `store_file`. Creating
    /// (`creating`), a prefix that holds any object but no `STORE` object is refused; opening
    /// an existing store whose prefix has none (made before the object existed), it is written.
    pub(crate) fn claim(&self, store_file: &[u8], creating: bool) -> Result<()> {
        let foreign = || {
            Error::InvalidOptions(format!(
                "{} belongs to another store (its STORE object names another store): a prefix \
                 holds one store",
                self.url
            ))
        };
        match self.get(MARKER)? {
            // Creating, the prefix may hold our own `STORE` only: a creation that stopped
            // after claiming it. Anything beside it (packs, the journal) is a store that lived
            // there: its metadata was lost (a rebuild cut short, a deleted `meta.redb`), and a
            // creation would start it over with other settings. Rebuild it instead.
            Some(b) if b.as_ref() == store_file && creating => {
                let others = self.list("")?;
                if others.iter().any(|(name, _)| name != MARKER) {
                    return Err(Error::InvalidOptions(format!(
                        "{} holds this store's packs and journal, but its metadata here is \
                         missing: rebuild it from the bucket (`lockerstore rebuild`) into an \
                         empty directory",
                        self.url
                    )));
                }
                return Ok(());
            }
            Some(b) if b.as_ref() == store_file => return Ok(()),
            Some(_) => return Err(foreign()),
            None => {}
        }
        if creating && !self.list("")?.is_empty() {
            return Err(Error::InvalidOptions(format!(
                "{} already holds objects: a new store needs an empty prefix",
                self.url
            )));
        }
        match self.put(MARKER, Bytes::copy_from_slice(store_file), Put::Create)? {
            Written::Written => Ok(()),
            // Another creation raced this one: whoever wrote it owns the prefix.
            Written::Exists => match self.get(MARKER)? {
                Some(b) if b.as_ref() == store_file => Ok(()),
                _ => Err(foreign()),
            },
        }
    }
}

/// `<prefix>/STORE`: the store's `STORE` file, byte for byte, written create-only when the
/// store is created, so no second store takes the same prefix and no store opens another's.
const MARKER: &str = "STORE";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_and_bad_urls_are_refused() {
        let loc = ObjectLocation::new("s3://packs/lockers/a")
            .endpoint("http://127.0.0.1:8333")
            .region("us-east-1")
            .allow_http(true);
        assert_eq!(ObjectLocation::decode(&loc.encode()).unwrap(), loc);
        assert_eq!(
            loc.bucket_and_prefix().unwrap(),
            ("packs".into(), "lockers/a".into())
        );
        assert_eq!(
            ObjectLocation::new("s3://b").bucket_and_prefix().unwrap(),
            ("b".into(), String::new())
        );
        assert!(ObjectLocation::new("gs://b").bucket_and_prefix().is_err());
        assert!(ObjectLocation::new("s3:///x").bucket_and_prefix().is_err());
        assert!(ObjectLocation::decode(b"nonsense").is_err());
        assert!(ObjectLocation::decode(b"url=s3://b\nfuture=1\n").is_err());
    }

    #[test]
    fn keys_and_listings_are_relative_to_the_prefix() {
        let mem: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let b =
            Bucket::connect(&ObjectLocation::new("s3://b/lockers/a"), Some(mem.clone())).unwrap();
        assert_eq!(
            b.put("packs/1.pack", Bytes::from_static(b"x"), Put::Create)
                .unwrap(),
            Written::Written
        );
        assert_eq!(
            b.put("packs/1.pack", Bytes::from_static(b"y"), Put::Create)
                .unwrap(),
            Written::Exists
        );
        assert_eq!(b.get("packs/1.pack").unwrap().unwrap().as_ref(), b"x");
        b.put("meta/2.log", Bytes::from_static(b"zz"), Put::Create)
            .unwrap();
        let other = Bucket::connect(&ObjectLocation::new("s3://b/lockers/ab"), Some(mem)).unwrap();
        other
            .put("packs/9.pack", Bytes::new(), Put::Create)
            .unwrap();
        assert_eq!(b.list("packs").unwrap(), [("1.pack".to_owned(), 1)]);
        let mut all = b.list("").unwrap();
        all.sort();
        assert_eq!(
            all,
            [("meta/2.log".to_owned(), 2), ("packs/1.pack".to_owned(), 1)]
        );
        b.delete("packs/1.pack").unwrap();
        b.delete("packs/1.pack").unwrap();
        assert_eq!(b.head("packs/1.pack").unwrap(), None);
    }
}
