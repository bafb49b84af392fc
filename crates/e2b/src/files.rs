//! envd's `/files`: a download streams `cat` of the file out of the guest; an upload
//! streams the request body (a multipart form's file parts, or the raw body, gunzipped when
//! it says so) into a temporary file beside the target, which replaces the target only
//! once the whole body has arrived (a broken upload leaves the old file, or none). Neither
//! holds a file in memory, and paths only ever travel as arguments.

use std::io;

use banger_client::Client;
use banger_client::exec::{self, Control, ExecEnd};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use std::future::Future;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::mpsc;

use crate::guest::{self, User};
use crate::http::{self, Body, ChannelBody};

/// Exit codes of the download script.
const NOT_FOUND: i32 = 44;
const IS_A_DIRECTORY: i32 = 45;

/// Resolves `$1` against the user's home (as envd does), then does the rest.
const DOWNLOAD: &str = r#"cd "${HOME:-/}" 2>/dev/null || cd /
p=$1; [ -e "$p" ] || exit 44; [ -d "$p" ] && exit 45
exec cat -- "$p""#;

/// Makes the parents, writes stdin to a temporary file beside the target, prints the
/// target's absolute path and the temporary file's, NUL-separated.
const UPLOAD: &str = r#"cd "${HOME:-/}" 2>/dev/null || cd /
case $1 in /*) p=$1 ;; *) p=$PWD/$1 ;; esac
d=$(dirname -- "$p"); mkdir -p -- "$d" || exit 1
t=$d/.banger-upload-$$
cat > "$t" || { rm -f -- "$t"; exit 1; }
printf '%s\0%s' "$p" "$t""#;

/// `ok TARGET TEMP`: the upload is whole, the temporary file replaces the target (keeping
/// an existing target's mode); anything else: it is removed.
const FINISH: &str = r#"if [ "$1" = ok ]; then
  [ -e "$2" ] && chmod --reference="$2" -- "$3" 2>/dev/null
  mv -f -- "$3" "$2"
else
  rm -f -- "$3"
fi"#;

const CHUNK: usize = 64 << 10;

/// envd's error for `/files`: the status, and `{code, message}` as JSON.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    http::json(
        status,
        &serde_json::json!({ "code": status.as_u16(), "message": message.into() }),
    )
}

/// The status of an exec that could not run: a refusal (an unknown user, a bad
/// directory) is the client's error; a 502 would tell the SDKs the sandbox is unreachable.
fn status_of(e: &crate::connect::RpcError) -> StatusCode {
    match e.code {
        crate::connect::Code::Unavailable | crate::connect::Code::Internal => {
            StatusCode::BAD_GATEWAY
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `GET /files?path=P`: the file's bytes.
pub async fn download(client: &Client, vm: &str, user: &User, path: &str) -> Response<Body> {
    let params = user.exec(
        vm,
        ["sh", "-c", DOWNLOAD, "sh", path]
            .map(String::from)
            .to_vec(),
        Vec::new(),
        None,
    );
    let (out_w, mut out_r) = tokio::io::duplex(CHUNK);
    let (tx, body) = ChannelBody::channel(4);
    let (status_tx, status_rx) =
        tokio::sync::oneshot::channel::<Result<(), (StatusCode, String)>>();
    let client = client.clone();
    let shown = crate::shown(path, 400);
    tokio::spawn(async move {
        let mut out_w = out_w;
        let mut err = Vec::new();
        let session = async {
            let (_controls, rx) = mpsc::unbounded_channel::<Control>();
            let end =
                exec::session(&client, &params, None::<&[u8]>, rx, &mut out_w, &mut err).await;
            drop(out_w);
            end
        };
        let relay = async {
            let mut status_tx = Some(status_tx);
            let mut buf = vec![0u8; CHUNK];
            loop {
                match out_r.read(&mut buf).await {
                    Ok(n) if n > 0 => {
                        if let Some(s) = status_tx.take() {
                            let _ = s.send(Ok(()));
                        }
                        if tx
                            .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            return status_tx;
                        }
                    }
                    _ => return status_tx,
                }
            }
        };
        let (end, status_tx) = tokio::join!(session, relay);
        let outcome = match end {
            Ok(ExecEnd::Exited(s)) if s.shell_code() == 0 => Ok(()),
            Ok(ExecEnd::Exited(s)) if s.shell_code() == NOT_FOUND => Err((
                StatusCode::NOT_FOUND,
                format!("path '{shown}' does not exist"),
            )),
            Ok(ExecEnd::Exited(s)) if s.shell_code() == IS_A_DIRECTORY => Err((
                StatusCode::BAD_REQUEST,
                format!("path '{shown}' is a directory"),
            )),
            Ok(ExecEnd::FailedToStart(f)) => Err((
                StatusCode::BAD_REQUEST,
                banger_api::text::visible(&f.message).into_owned(),
            )),
            Ok(end) => Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "reading '{shown}': {} (exit {})",
                    banger_api::text::visible(String::from_utf8_lossy(&err).trim()),
                    end.shell_code()
                ),
            )),
            Err(e) => {
                let e = guest::exec_error(&e);
                Err((status_of(&e), e.message))
            }
        };
        match status_tx {
            // Nothing was sent yet: the status tells.
            Some(s) => {
                let _ = s.send(outcome);
            }
            // Mid-body: only a broken transfer can say it failed.
            None => {
                if let Err((_, message)) = outcome {
                    let _ = tx.send(Err(io::Error::other(message))).await;
                }
            }
        }
    });
    match status_rx.await {
        Ok(Ok(())) => {
            let mut response = Response::new(body);
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        Ok(Err((status, message))) => error(status, message),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the download ended early",
        ),
    }
}

/// `POST /files[?path=P]`: a multipart form (each `file` part to `path`, or to its
/// filename when no path is given) or a raw body to `path`.
pub async fn upload(
    client: &Client,
    vm: &str,
    user: &User,
    path: Option<String>,
    content_type: Option<&str>,
    gzip: bool,
    body: Incoming,
) -> Response<Body> {
    let written = match content_type.and_then(|ct| multer::parse_boundary(ct).ok()) {
        Some(boundary) => multipart(client, vm, user, path, boundary, body).await,
        None => match path {
            None => Err((
                StatusCode::BAD_REQUEST,
                "the path query parameter is required".to_string(),
            )),
            Some(path) => {
                let (w, r) = tokio::io::duplex(CHUNK);
                write_one(client, vm, user, &path, r, feed_body(body, gzip, w))
                    .await
                    .map(|info| vec![info])
            }
        },
    };
    match written {
        Ok(infos) if infos.is_empty() => error(StatusCode::BAD_REQUEST, "the form has no file"),
        Ok(infos) => http::json(StatusCode::OK, &infos),
        Err((status, message)) => error(status, message),
    }
}

async fn multipart(
    client: &Client,
    vm: &str,
    user: &User,
    path: Option<String>,
    boundary: String,
    body: Incoming,
) -> Result<Vec<serde_json::Value>, (StatusCode, String)> {
    let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
    let mut infos = Vec::new();
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("reading the form: {e}")))?;
        let Some(field) = field else { break };
        let target = match (&path, field.file_name()) {
            (Some(path), _) => path.clone(),
            (None, Some(name)) if !name.is_empty() => name.to_string(),
            _ => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "a file part without a path: give ?path= or the part's filename".into(),
                ));
            }
        };
        let (w, r) = tokio::io::duplex(CHUNK);
        infos.push(write_one(client, vm, user, &target, r, feed_field(field, w)).await?);
    }
    Ok(infos)
}

/// Streams what `feed` writes into `path` in the guest, which it replaces only when the
/// feed ends well; envd's `EntryInfo` of the file.
async fn write_one(
    client: &Client,
    vm: &str,
    user: &User,
    path: &str,
    data: DuplexStream,
    feed: impl Future<Output = Result<(), String>>,
) -> Result<serde_json::Value, (StatusCode, String)> {
    if path.is_empty() || path.contains('\0') {
        return Err((
            StatusCode::BAD_REQUEST,
            "a path must be non-empty text".into(),
        ));
    }
    let shown = crate::shown(path, 400);
    let args = [path];
    let copy = guest::script(
        client,
        vm,
        user,
        UPLOAD,
        &args,
        Some(Box::new(data)),
        64 << 10,
        // As long as the client sends: the body bounds it.
        None,
    );
    let (fed, copied) = tokio::join!(feed, copy);
    let done = copied.map_err(|e| (status_of(&e), e.message))?;
    let names: Vec<String> = String::from_utf8_lossy(&done.stdout)
        .split('\0')
        .map(String::from)
        .collect();
    let (target, temp) = match (done.code, names.as_slice()) {
        (0, [target, temp]) => (target.clone(), temp.clone()),
        _ => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "writing '{shown}': {} (exit {})",
                    done.stderr_line(),
                    done.code
                ),
            ));
        }
    };
    let verdict = if fed.is_ok() { "ok" } else { "abort" };
    let finished = guest::script(
        client,
        vm,
        user,
        FINISH,
        &[verdict, &target, &temp],
        None,
        4096,
        Some(guest::SCRIPT_TIME),
    )
    .await
    .map_err(|e| (status_of(&e), e.message))?;
    if let Err(why) = fed {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("uploading '{shown}': {why}"),
        ));
    }
    if finished.code != 0 {
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing '{shown}': {}", finished.stderr_line()),
        ));
    }
    let name = target.rsplit('/').next().unwrap_or("").to_string();
    Ok(serde_json::json!({ "name": name, "type": "file", "path": target }))
}

/// A raw body into `w`, inflated when it is gzip; an error when the body breaks off.
async fn feed_body(mut body: Incoming, gzip: bool, mut w: DuplexStream) -> Result<(), String> {
    let mut inflater = gzip.then(|| flate2::write::MultiGzDecoder::new(Vec::new()));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the request body: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let out = match &mut inflater {
            Some(inflater) => {
                std::io::Write::write_all(inflater, &data)
                    .map_err(|e| format!("the gzip body is broken: {e}"))?;
                Bytes::from(std::mem::take(inflater.get_mut()))
            }
            None => data,
        };
        write_guest(&mut w, &out).await?;
    }
    if let Some(inflater) = inflater {
        let rest = inflater
            .finish()
            .map_err(|e| format!("the gzip body is broken: {e}"))?;
        write_guest(&mut w, &rest).await?;
    }
    w.shutdown().await.map_err(|e| e.to_string())
}

/// A form part into `w`; an error when the form breaks off.
async fn feed_field(mut field: multer::Field<'static>, mut w: DuplexStream) -> Result<(), String> {
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| format!("reading the form: {e}"))?
    {
        write_guest(&mut w, &chunk).await?;
    }
    w.shutdown().await.map_err(|e| e.to_string())
}

async fn write_guest(w: &mut DuplexStream, bytes: &[u8]) -> Result<(), String> {
    w.write_all(bytes)
        .await
        .map_err(|_| "the guest stopped reading the upload".to_string())
}

/// Whether the body says it is gzip-encoded.
pub fn is_gzip(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}
