//! The HTTP side: accept loop with connection accounting, routing, fault application, Vision objects,
//! the S3 listing and the admin endpoints. REST handlers live in `rest.rs`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fault::{Fault, FaultKind, Group};
use crate::market::Market;
use crate::reply::{Reply, parse_query};
use crate::vision::{self, Blob, DataKind, FileId, Listed, Variant};
use crate::{LoggedRequest, Shared};

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

struct ConnGuard(Arc<Shared>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.open_conns.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    shared.open_conns.fetch_add(1, Ordering::SeqCst);
                    shared.total_conns.fetch_add(1, Ordering::SeqCst);
                    let guard = ConnGuard(shared.clone());
                    shared.tracker.spawn(connection(stream, shared.clone(), guard));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, shared: Arc<Shared>, guard: ConnGuard) {
    let _guard = guard;
    let _ = stream.set_nodelay(true);
    // Cancelled by a reset fault: dropping the connection future drops the socket mid-body.
    let abort = CancellationToken::new();
    let svc_shared = shared.clone();
    let svc_abort = abort.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        let abort = svc_abort.clone();
        async move { Ok::<_, Infallible>(handle(shared, abort, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shared.cancel.cancelled() => {}
        _ = abort.cancelled() => {}
    }
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

fn record(shared: &Shared, method: &Method, path: &str, query: &str, status: u16, bytes: u64) {
    let mut s = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    s.stats.total_requests += 1;
    *s.stats
        .requests_by_path
        .entry(path.to_string())
        .or_default() += 1;
    *s.stats.requests_by_status.entry(status).or_default() += 1;
    s.log.push(LoggedRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        status,
        bytes,
    });
}

pub(crate) fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

async fn handle(
    shared: Arc<Shared>,
    abort: CancellationToken,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if let Some(admin) = path.strip_prefix("/_emulator/") {
        let admin = admin.to_string();
        let reply = admin_route(&shared, &method, &admin, &query, req).await;
        return to_response(reply, None, abort, false);
    }
    let head = method == Method::HEAD;
    let headers = req.headers().clone();
    // Faults replacing the whole response.
    let is_checksum = path.ends_with(".CHECKSUM");
    let stripped = path.trim_end_matches(".CHECKSUM").to_string();
    let response_fault = shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(Group::Response, |f| match f.kind {
            FaultKind::MissingChecksum => is_checksum && (f.matches(&path) || f.matches(&stripped)),
            _ => f.matches(&path),
        });
    let reply = match response_fault {
        Some(FaultKind::Hang) => {
            record(&shared, &method, &path, &query, 0, 0);
            // Never answer: the connection task drops this future (and the socket) on shutdown.
            std::future::pending::<()>().await;
            return to_response(
                Reply::new(StatusCode::SERVICE_UNAVAILABLE, "text/plain", ""),
                None,
                abort,
                head,
            );
        }
        Some(k) => fault_reply(&shared, &k, &path),
        None => route(&shared, &method, &path, &query, &headers).await,
    };
    let delivery = shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(Group::Delivery, |f| f.matches(&path));
    let sent = match (&delivery, head) {
        (_, true) => 0,
        (Some(FaultKind::ResetMidBody | FaultKind::TruncatedBody), _) => {
            (reply.body.len() / 2) as u64
        }
        _ => reply.body.len() as u64,
    };
    record(&shared, &method, &path, &query, reply.status.as_u16(), sent);
    to_response(reply, delivery, abort, head)
}

fn to_response(
    reply: Reply,
    delivery: Option<FaultKind>,
    abort: CancellationToken,
    head: bool,
) -> Response<Body> {
    let len = reply.body.len();
    let body: Body = if head {
        full(Bytes::new())
    } else {
        match delivery {
            Some(FaultKind::SlowBody { bytes_per_sec }) => {
                let chunk = (bytes_per_sec / 20).max(1) as usize;
                let data = reply.body.clone();
                let stream = futures::stream::unfold(0usize, move |off| {
                    let data = data.clone();
                    async move {
                        if off >= data.len() {
                            return None;
                        }
                        if off > 0 {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let end = (off + chunk).min(data.len());
                        Some((
                            Ok::<_, std::io::Error>(Frame::data(data.slice(off..end))),
                            end,
                        ))
                    }
                });
                StreamBody::new(stream).boxed()
            }
            Some(FaultKind::ResetMidBody) => {
                let part = reply.body.slice(..len / 2);
                let stream = futures::stream::unfold(0u8, move |state| {
                    let part = part.clone();
                    let abort = abort.clone();
                    async move {
                        match state {
                            0 => Some((Ok(Frame::data(part)), 1)),
                            _ => {
                                // Let the partial body reach the socket, then drop the connection.
                                tokio::time::sleep(Duration::from_millis(30)).await;
                                abort.cancel();
                                Some((Err(std::io::Error::other("connection reset by fault")), 2))
                            }
                        }
                    }
                });
                StreamBody::new(futures::StreamExt::take(stream, 2)).boxed()
            }
            Some(FaultKind::TruncatedBody) => {
                let part = reply.body.slice(..len / 2);
                let stream = futures::stream::unfold(Some(part), |part| async move {
                    match part {
                        Some(p) => Some((Ok::<_, std::io::Error>(Frame::data(p)), None)),
                        None => {
                            // Let the partial body reach the socket, then end short of Content-Length
                            // (hyper closes the connection).
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            None
                        }
                    }
                });
                StreamBody::new(stream).boxed()
            }
            _ => full(reply.body.clone()),
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = reply.status;
    let h: &mut HeaderMap = resp.headers_mut();
    for (n, v) in &reply.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.append(n.clone(), v);
        }
    }
    if !h.contains_key(header::CONTENT_LENGTH) {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

fn s3_error(status: StatusCode, code: &str, message: &str, key: Option<&str>) -> Reply {
    let key = key
        .map(|k| format!("<Key>{}</Key>", xml_escape(k)))
        .unwrap_or_default();
    Reply::new(
        status,
        "application/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{key}<RequestId>EMU0000000000000</RequestId><HostId>dsm-emulator</HostId></Error>"
        ),
    )
    .header("server", "AmazonS3")
}

fn not_found(key: &str) -> Reply {
    s3_error(
        StatusCode::NOT_FOUND,
        "NoSuchKey",
        "The specified key does not exist.",
        Some(key),
    )
}

pub(crate) fn market_of_rest(path: &str) -> Option<Market> {
    // USD-M's statistics live beside its API (`fapi.binance.com/futures/data/...`).
    if path.starts_with("/futures/data/") {
        return Some(Market::Um);
    }
    Market::ALL
        .into_iter()
        .find(|m| path.starts_with(&format!("{}/", m.rest_prefix())))
}

fn fault_reply(shared: &Shared, k: &FaultKind, path: &str) -> Reply {
    let rest = market_of_rest(path);
    let retry = shared
        .rate_limits
        .retry_after
        .unwrap_or(Duration::from_secs(1))
        .as_secs()
        .max(1);
    match (k, rest) {
        (FaultKind::Status500, Some(_)) => Reply::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json;charset=UTF-8",
            r#"{"code":-1000,"msg":"An unknown error occurred while processing the request."}"#,
        ),
        (FaultKind::Status500, None) => s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
            None,
        ),
        (FaultKind::AccessDenied403, _) => {
            s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied", None)
        }
        (FaultKind::TooManyRequests429, Some(m)) => {
            crate::rest::too_many(m, shared.rate_limits.limit(m)).header(header::RETRY_AFTER, retry)
        }
        (FaultKind::TooManyRequests429, None) => s3_error(
            StatusCode::TOO_MANY_REQUESTS,
            "SlowDown",
            "Please reduce your request rate.",
            None,
        )
        .header(header::RETRY_AFTER, retry),
        (FaultKind::Banned418, Some(m)) => {
            let until = shared.now_ms() + shared.rate_limits.ban.as_millis() as i64;
            crate::rest::banned(m, until)
                .header(header::RETRY_AFTER, shared.rate_limits.ban.as_secs().max(1))
        }
        (FaultKind::Banned418, None) => Reply::new(StatusCode::IM_A_TEAPOT, "text/plain", "banned")
            .header(header::RETRY_AFTER, shared.rate_limits.ban.as_secs().max(1)),
        (FaultKind::MissingChecksum, _) => not_found(path.trim_start_matches('/')),
        _ => Reply::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "unexpected fault",
        ),
    }
}

async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Reply {
    let get_like = *method == Method::GET || *method == Method::HEAD;
    if path == "/data.binance.vision" || path == "/data.binance.vision/" {
        if !get_like {
            return s3_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                None,
            );
        }
        return listing(shared, query).await;
    }
    if path.starts_with("/data/") {
        if !get_like {
            return s3_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                None,
            );
        }
        return object(shared, path, headers).await;
    }
    if let Some(m) = market_of_rest(path) {
        return crate::rest::handle(shared, m, path, query, headers).await;
    }
    Reply::new(StatusCode::NOT_FOUND, "text/plain", "")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The zip blob for a key (real file first, else synthetic if it exists and is published).
async fn zip_blob(shared: &Arc<Shared>, key: &str, variant: Variant) -> Option<Arc<Blob>> {
    let now = shared.clock.now();
    let parsed = FileId::parse(key);
    if let Some((id, _)) = &parsed
        && shared.rules.publish_time(id.chunk) > now
    {
        return None;
    }
    let generation = shared.store.generation();
    if let Some(path) = shared.store.real.get(key).cloned() {
        let published = parsed
            .as_ref()
            .map(|(id, _)| shared.rules.publish_time(id.chunk))
            .unwrap_or_default();
        return shared
            .files
            .get_or_build((key.to_string(), 0, variant), move || {
                let bytes = std::fs::read(path).ok()?;
                let bytes = match variant {
                    Variant::Normal => bytes,
                    other => other.apply(&bytes)?,
                };
                Some(Blob::new(Bytes::from(bytes), published))
            })
            .await;
    }
    let (id, _) = parsed?;
    if !vision::synthetic_exists(&shared.store, &id) {
        return None;
    }
    let s2 = shared.clone();
    let cancel = shared.cancel.clone();
    match variant {
        Variant::Normal => {
            shared
                .files
                .get_or_build((key.to_string(), generation, Variant::Normal), move || {
                    vision::build_zip(&s2.store, &s2.rules, &id, &cancel)
                })
                .await
        }
        other => {
            let normal = Box::pin(zip_blob(shared, key, Variant::Normal)).await?;
            shared
                .files
                .get_or_build((key.to_string(), generation, other), move || {
                    Some(Blob::new(
                        Bytes::from(other.apply(&normal.bytes)?),
                        normal.last_modified,
                    ))
                })
                .await
        }
    }
}

fn zip_reply(blob: &Blob, headers: &HeaderMap, content_type: &str) -> Reply {
    let total = blob.bytes.len();
    let base = |status, body: Bytes| {
        Reply::new(status, content_type, body)
            .header(header::ETAG, format!("\"{}\"", blob.md5))
            .header(header::LAST_MODIFIED, http_date(blob.last_modified))
            .header(header::ACCEPT_RANGES, "bytes")
            .header("server", "AmazonS3")
            .header("x-cache", "Miss from cloudfront")
    };
    if let Some(r) = headers.get(header::RANGE).and_then(|v| v.to_str().ok())
        && let Some((a, b)) = parse_range(r, total)
    {
        return base(StatusCode::PARTIAL_CONTENT, blob.bytes.slice(a..=b))
            .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{total}"));
    }
    base(StatusCode::OK, blob.bytes.clone())
}

/// A single `bytes=a-b`, `bytes=a-` or `bytes=-n` range within `total`.
fn parse_range(r: &str, total: usize) -> Option<(usize, usize)> {
    let spec = r.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok()?;
            (total.saturating_sub(n), total - 1)
        }
        (a, "") => (a.parse().ok()?, total - 1),
        (a, b) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(total - 1)),
    };
    (a <= b && a < total).then_some((a, b))
}

async fn object(shared: &Arc<Shared>, path: &str, headers: &HeaderMap) -> Reply {
    let key = path.trim_start_matches('/');
    let is_checksum = key.ends_with(".CHECKSUM");
    let zip_key = key.trim_end_matches(".CHECKSUM");
    let zip_path = path.trim_end_matches(".CHECKSUM");
    let newline = shared.rules.checksum_trailing_newline;
    if is_checksum {
        let (mismatch, variant) = {
            let mut f = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
            let mismatch = f
                .take(Group::Content, |x| {
                    x.kind == FaultKind::ChecksumMismatch
                        && (x.matches(path) || x.matches(zip_path))
                })
                .is_some();
            // A content fault whose sidecar matches the bytes it serves.
            let variant = f
                .first_active(|x: &Fault| {
                    Variant::of(&x.kind).is_some() && (x.matches(zip_path) || x.matches(path))
                })
                .and_then(|k| Variant::of(&k))
                .unwrap_or(Variant::Normal);
            (mismatch, variant)
        };
        // A real sidecar is served as-is unless a fault changes it.
        if let Some(p) = shared.store.real.get(key).cloned()
            && !mismatch
            && variant == Variant::Normal
        {
            let gated = FileId::parse(key)
                .is_some_and(|(id, _)| shared.rules.publish_time(id.chunk) > shared.clock.now());
            if gated {
                return not_found(key);
            }
            return match tokio::fs::read(&p).await {
                Ok(b) => {
                    let lm = FileId::parse(key)
                        .map(|(id, _)| {
                            shared.rules.publish_time(id.chunk) - chrono::TimeDelta::seconds(1)
                        })
                        .unwrap_or_default();
                    let blob = Blob::new(Bytes::from(b), lm);
                    zip_reply(&blob, headers, "binary/octet-stream")
                }
                Err(_) => not_found(key),
            };
        }
        if shared.store.real.contains_key(zip_key) && !shared.store.real.contains_key(key) {
            // A real zip without a sidecar: the sidecar is missing, as on Binance.
            return not_found(key);
        }
        let Some(blob) = zip_blob(shared, zip_key, variant).await else {
            return not_found(key);
        };
        let name = zip_key.rsplit('/').next().unwrap_or(zip_key);
        let sha = if mismatch {
            let mut s: Vec<u8> = blob.sha256.bytes().collect();
            s.reverse();
            if s == blob.sha256.as_bytes() {
                s[0] = if s[0] == b'0' { b'1' } else { b'0' };
            }
            String::from_utf8(s).unwrap_or_default()
        } else {
            blob.sha256.clone()
        };
        let text = vision::checksum_text(&sha, name, newline);
        let lm = blob.last_modified - chrono::TimeDelta::seconds(1);
        let cblob = Blob::new(Bytes::from(text), lm);
        return zip_reply(&cblob, headers, "binary/octet-stream");
    }
    let variant = shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(Group::Content, |x| {
            Variant::of(&x.kind).is_some() && x.matches(path)
        })
        .and_then(|k| Variant::of(&k))
        .unwrap_or(Variant::Normal);
    match zip_blob(shared, key, variant).await {
        Some(b) => zip_reply(&b, headers, "application/zip"),
        None => not_found(key),
    }
}

/// Listing metadata of one key: (LastModified, ETag (quoted), Size).
async fn key_meta(shared: &Arc<Shared>, key: &str) -> (DateTime<Utc>, String, u64) {
    let is_checksum = key.ends_with(".CHECKSUM");
    let zip_key = key.trim_end_matches(".CHECKSUM");
    let newline = shared.rules.checksum_trailing_newline;
    if let Some(p) = shared.store.real.get(key).cloned() {
        let bytes = tokio::fs::read(&p).await.unwrap_or_default();
        let lm = FileId::parse(key)
            .map(|(id, c)| {
                shared.rules.publish_time(id.chunk) - chrono::TimeDelta::seconds(i64::from(c))
            })
            .unwrap_or_default();
        let b = Blob::new(Bytes::from(bytes), lm);
        return (lm, format!("\"{}\"", b.md5), b.bytes.len() as u64);
    }
    let Some((id, _)) = FileId::parse(zip_key) else {
        return (DateTime::default(), "\"\"".into(), 0);
    };
    let published = shared.rules.publish_time(id.chunk);
    let rows = id.estimated_rows(shared.store.trades_per_day);
    let cached = shared.files.peek(&(
        zip_key.to_string(),
        shared.store.generation(),
        Variant::Normal,
    ));
    let blob = match cached {
        Some(b) => Some(b),
        None if rows <= shared.rules.listing_exact_max_rows => {
            zip_blob(shared, zip_key, Variant::Normal).await
        }
        None => None,
    };
    let name = id.file_name();
    match (blob, is_checksum) {
        (Some(b), false) => (published, format!("\"{}\"", b.md5), b.bytes.len() as u64),
        (Some(b), true) => {
            let text = vision::checksum_text(&b.sha256, &name, newline);
            let cb = Blob::new(Bytes::from(text), published);
            (
                published - chrono::TimeDelta::seconds(1),
                format!("\"{}\"", cb.md5),
                cb.bytes.len() as u64,
            )
        }
        (None, c) => {
            let tag = format!(
                "\"{:016x}{:016x}-1\"",
                crate::synth::fnv(key),
                crate::synth::splitmix(crate::synth::fnv(key) ^ shared.store.generation())
            );
            if c {
                let size = 64 + 2 + name.len() as u64 + u64::from(newline);
                (published - chrono::TimeDelta::seconds(1), tag, size)
            } else {
                let per_row = match id.kind {
                    DataKind::Kline(..) => 45,
                    _ => 20,
                };
                (published, tag, rows * per_row)
            }
        }
    }
}

async fn listing(shared: &Arc<Shared>, query: &str) -> Reply {
    let q = parse_query(query);
    let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let prefix = get("prefix").unwrap_or_default();
    let delimiter = get("delimiter").unwrap_or_default();
    let marker = get("marker").unwrap_or_default();
    let max_keys = match get("max-keys") {
        None => 1000,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n.min(1000),
            Err(_) => {
                return s3_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "Provided max-keys not an integer or within integer range",
                    None,
                );
            }
        },
    };
    let delimited = delimiter == "/";
    let now = shared.clock.now();
    let s2 = shared.clone();
    let (p2, m2) = (prefix.clone(), marker.clone());
    let mut entries = tokio::task::spawn_blocking(move || {
        vision::list(&s2.store, &s2.rules, &p2, delimited, &m2, max_keys, now)
    })
    .await
    .unwrap_or_default();
    let truncated = entries.len() > max_keys;
    entries.truncate(max_keys);
    let mut contents = String::new();
    let mut prefixes = String::new();
    let mut last = None;
    for e in &entries {
        match e {
            Listed::Key(k) => {
                let (lm, etag, size) = key_meta(shared, k).await;
                contents.push_str(&format!(
                    "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                    xml_escape(k),
                    lm.format("%Y-%m-%dT%H:%M:%S.000Z"),
                    xml_escape(&etag),
                    size
                ));
                last = Some(k.clone());
            }
            Listed::Prefix(p) => {
                prefixes.push_str(&format!(
                    "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                    xml_escape(p)
                ));
                last = Some(p.clone());
            }
        }
    }
    let next_marker = match (&last, truncated && !delimiter.is_empty()) {
        (Some(l), true) => format!("<NextMarker>{}</NextMarker>", xml_escape(l)),
        _ => String::new(),
    };
    let delim = if delimiter.is_empty() {
        String::new()
    } else {
        format!("<Delimiter>{}</Delimiter>", xml_escape(&delimiter))
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>data.binance.vision</Name><Prefix>{}</Prefix><Marker>{}</Marker>{next_marker}<MaxKeys>{max_keys}</MaxKeys>{delim}<IsTruncated>{truncated}</IsTruncated>{contents}{prefixes}</ListBucketResult>",
        xml_escape(&prefix),
        xml_escape(&marker),
    );
    Reply::new(StatusCode::OK, "application/xml", body).header("server", "AmazonS3")
}

fn json(status: StatusCode, v: &serde_json::Value) -> Reply {
    Reply::new(status, "application/json", v.to_string())
}

async fn admin_route(
    shared: &Arc<Shared>,
    method: &Method,
    what: &str,
    query: &str,
    req: Request<Incoming>,
) -> Reply {
    let q = parse_query(query);
    match (method.clone(), what) {
        (Method::GET, "stats") => json(StatusCode::OK, &serde_json::json!(shared.stats())),
        (Method::GET, "log") => {
            let log = shared
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .log
                .clone();
            json(StatusCode::OK, &serde_json::json!(log))
        }
        (Method::DELETE, "log") => {
            shared
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .log
                .clear();
            json(StatusCode::OK, &serde_json::json!({}))
        }
        (Method::GET, "clock") => json(
            StatusCode::OK,
            &serde_json::json!({"now": shared.clock.now().to_rfc3339(), "nowMs": shared.now_ms()}),
        ),
        (Method::POST, "clock") => {
            let Some(v) = q.iter().find(|(k, _)| k == "now").map(|(_, v)| v.clone()) else {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "missing ?now="}),
                );
            };
            let t = DateTime::parse_from_rfc3339(&v)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    v.parse::<i64>()
                        .ok()
                        .and_then(DateTime::from_timestamp_millis)
                });
            match t {
                Some(t) => {
                    shared.clock.set(t);
                    json(StatusCode::OK, &serde_json::json!({"now": t.to_rfc3339()}))
                }
                None => json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "now must be RFC 3339 or epoch ms"}),
                ),
            }
        }
        (Method::GET, "faults") => {
            let list: Vec<String> = shared
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .list()
                .iter()
                .map(ToString::to_string)
                .collect();
            json(StatusCode::OK, &serde_json::json!(list))
        }
        (Method::POST, "faults") => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut specs: Vec<String> = String::from_utf8_lossy(&body)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            specs.extend(
                q.iter()
                    .filter(|(k, _)| k == "fault")
                    .map(|(_, v)| v.clone()),
            );
            let mut parsed = Vec::new();
            for s in &specs {
                match s.parse::<Fault>() {
                    Ok(f) => parsed.push(f),
                    Err(e) => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &serde_json::json!({"error": e.to_string()}),
                        );
                    }
                }
            }
            let added: Vec<String> = parsed.iter().map(ToString::to_string).collect();
            for f in parsed {
                shared.add_fault(f);
            }
            json(StatusCode::OK, &serde_json::json!({"added": added}))
        }
        (Method::DELETE, "faults") => {
            shared.clear_faults();
            json(StatusCode::OK, &serde_json::json!({}))
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "unknown admin endpoint"}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
    }
}
