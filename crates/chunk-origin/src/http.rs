//! The HTTP/1.1 server: keep-alive connections, `GET`/`HEAD`, single byte ranges, faults.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::{Fault, RequestRecord, State, Validators};

/// The most header bytes a request may have.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes written per socket write.
const PIECE: usize = 64 * 1024;

pub(crate) async fn serve(listener: TcpListener, state: Arc<State>, stop: watch::Receiver<bool>) {
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stopped| *stopped) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let mut stop = stop;
                        tokio::select! {
                            _ = stop.wait_for(|stopped| *stopped) => {}
                            () = connection(stream, state) => {}
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "origin accept failed"),
            }
        }
    }
}

struct Request {
    method: String,
    path: String,
    range: Option<(u64, Option<u64>)>,
    if_match: Option<String>,
    if_range: Option<String>,
    close: bool,
}

/// Serves requests on one connection until it closes or a fault ends it.
async fn connection(mut stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::with_capacity(1024);
    loop {
        let request = match read_request(&mut stream, &mut buffer).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(reason) => {
                let _ = simple(&mut stream, 400, reason, false, true).await;
                return;
            }
        };
        match respond(&mut stream, &state, &request).await {
            Ok(true) if !request.close => {}
            _ => return,
        }
    }
}

/// Reads one request head. `Ok(None)` at a clean end of the connection.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Result<Option<Request>, &'static str> {
    let end = loop {
        if let Some(position) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break position;
        }
        if buffer.len() > MAX_HEAD {
            return Err("request head too large");
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) if buffer.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err("connection closed mid-request"),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    buffer.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version)) = (
        request_line.next(),
        request_line.next(),
        request_line.next(),
    ) else {
        return Err("malformed request line");
    };
    if !version.starts_with("HTTP/1.") {
        return Err("unsupported HTTP version");
    }
    let path = target
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    let mut range = None;
    let mut if_match = None;
    let mut if_range = None;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err("malformed header");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("range") {
            range = parse_range(value);
        } else if name.eq_ignore_ascii_case("if-match") {
            if_match = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("if-range") {
            if_range = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(Request {
        method: method.to_string(),
        path,
        range,
        if_match,
        if_range,
        close,
    }))
}

/// `bytes=N-` or `bytes=N-M`.
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (first, last) = value.strip_prefix("bytes=")?.split_once('-')?;
    let first = first.parse().ok()?;
    let last = if last.is_empty() {
        None
    } else {
        Some(last.parse().ok()?)
    };
    Some((first, last))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        307 => "Temporary Redirect",
        405 => "Method Not Allowed",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A small HTML error page, like a real server's.
async fn simple(
    stream: &mut TcpStream,
    status: u16,
    message: &str,
    head_only: bool,
    close: bool,
) -> std::io::Result<()> {
    simple_to(stream, status, message, head_only, close, None).await
}

/// [`simple`] with a given `Location` for a redirect.
async fn simple_to(
    stream: &mut TcpStream,
    status: u16,
    message: &str,
    head_only: bool,
    close: bool,
    location: Option<&str>,
) -> std::io::Result<()> {
    let body = format!(
        "<html><head><title>{status} {r}</title></head><body><h1>{r}</h1><p>{message}</p></body></html>\n",
        r = reason(status)
    );
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    if (300..400).contains(&status) {
        let location = location.unwrap_or("http://127.0.0.1:9/elsewhere");
        head.push_str(&format!("Location: {location}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.flush().await
}

/// Answers one request. `Ok(true)` if the connection may serve another.
async fn respond(
    stream: &mut TcpStream,
    state: &State,
    request: &Request,
) -> std::io::Result<bool> {
    let record = |status: u16| {
        state.record(RequestRecord {
            method: request.method.clone(),
            path: request.path.clone(),
            range: request.range,
            status,
        });
    };
    let head_only = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            record(405);
            simple(stream, 405, "only GET and HEAD", false, false).await?;
            return Ok(true);
        }
    };
    if head_only && let Some(status) = state.head_status(&request.path) {
        record(status);
        simple(stream, status, "HEAD refused", true, false).await?;
        return Ok(true);
    }
    let fault = state.fault(&request.path, !head_only);
    if let Some(Fault::Redirect { status, location }) = &fault {
        record(*status);
        simple_to(stream, *status, "moved", head_only, false, Some(location)).await?;
        return Ok(true);
    }
    if let Some(Fault::Status(status)) = fault {
        record(status);
        simple(stream, status, "injected fault", head_only, false).await?;
        return Ok(true);
    }
    let Some(file) = state.file(&request.path) else {
        record(404);
        simple(stream, 404, "no such file", head_only, false).await?;
        return Ok(true);
    };
    let tag = format!("\"{}\"", etag(&file));
    let validators = state.validators(&request.path);
    // If-Match and If-Range compare strongly: only a strong ETag can match.
    let strong = validators == Validators::StrongEtag;
    if let Some(wanted) = &request.if_match
        && wanted != "*"
        && !(strong && wanted == &tag)
    {
        record(412);
        simple(stream, 412, "the ETag does not match", head_only, false).await?;
        return Ok(true);
    }
    let total = file.len() as u64;
    // An If-Range that does not match (a date, another or a weak ETag) asks for the whole.
    let range_applies = request
        .if_range
        .as_ref()
        .is_none_or(|wanted| strong && wanted == &tag);
    let range = match (&fault, request.range) {
        (Some(Fault::IgnoreRange), _) | (_, None) => None,
        (_, Some(_)) if !range_applies => None,
        (_, Some((first, last))) => {
            Some((first, last.unwrap_or(u64::MAX).min(total.saturating_sub(1))))
        }
    };
    let first = range.map_or(0, |(first, _)| first);
    let (status, body) = match range {
        Some((first, _)) if first >= total => {
            record(416);
            let head = format!(
                "HTTP/1.1 416 {}\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\n\r\n",
                reason(416)
            );
            stream.write_all(head.as_bytes()).await?;
            return Ok(true);
        }
        Some((first, last)) => (206, file.slice(first as usize..=last as usize)),
        None => (200, file.clone()),
    };
    record(status);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n",
        reason(status),
        body.len(),
    );
    match validators {
        Validators::StrongEtag => head.push_str(&format!("ETag: {tag}\r\n")),
        Validators::WeakEtag => head.push_str(&format!("ETag: W/{tag}\r\n")),
        Validators::LastModified => {
            head.push_str("Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n");
        }
        Validators::None => {}
    }
    if let Some((first, last)) = range {
        head.push_str(&format!("Content-Range: bytes {first}-{last}/{total}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if head_only {
        return Ok(true);
    }
    send_body(stream, state, body, first, fault).await
}

/// Writes the body, applying a body fault. `Ok(true)` if the connection stays usable.
async fn send_body(
    stream: &mut TcpStream,
    state: &State,
    body: Bytes,
    first: u64,
    fault: Option<Fault>,
) -> std::io::Result<bool> {
    let len = body.len() as u64;
    match fault {
        Some(Fault::Cut { after, gate }) => {
            write(stream, state, body.slice(..after.min(len) as usize), PIECE).await?;
            gate.arrive();
            gate.opened().await;
            stream.set_zero_linger()?;
            Ok(false)
        }
        Some(Fault::Corrupt { at }) => {
            let mut bytes = body.to_vec();
            if let Some(byte) = at
                .checked_sub(first)
                .and_then(|offset| bytes.get_mut(usize::try_from(offset).ok()?))
            {
                *byte ^= 0xff;
            }
            write(stream, state, Bytes::from(bytes), PIECE).await?;
            Ok(true)
        }
        Some(Fault::Truncate { after }) => {
            write(stream, state, body.slice(..after.min(len) as usize), PIECE).await?;
            stream.shutdown().await?;
            Ok(false)
        }
        Some(Fault::Reset { after }) => {
            write(stream, state, body.slice(..after.min(len) as usize), PIECE).await?;
            // A zero linger turns the close into a reset.
            stream.set_zero_linger()?;
            Ok(false)
        }
        Some(Fault::Slow { piece, delay }) => {
            let piece = piece.max(1);
            let mut sent = 0;
            while sent < body.len() {
                let end = (sent + piece).min(body.len());
                write(stream, state, body.slice(sent..end), PIECE).await?;
                sent = end;
                if sent < body.len() {
                    tokio::time::sleep(delay).await;
                }
            }
            Ok(true)
        }
        Some(Fault::Stall { after, gate }) => {
            let split = after.min(len) as usize;
            write(stream, state, body.slice(..split), PIECE).await?;
            gate.arrive();
            let mut probe = [0u8; 1];
            tokio::select! {
                () = gate.opened() => {}
                // The client hung up (or sent more than it should): stop.
                _ = stream.read(&mut probe) => return Ok(false),
            }
            write(stream, state, body.slice(split..), PIECE).await?;
            Ok(true)
        }
        Some(Fault::Status(_) | Fault::IgnoreRange | Fault::Redirect { .. }) | None => {
            write(stream, state, body, PIECE).await?;
            Ok(true)
        }
    }
}

async fn write(
    stream: &mut TcpStream,
    state: &State,
    body: Bytes,
    piece: usize,
) -> std::io::Result<()> {
    for part in body.chunks(piece) {
        stream.write_all(part).await?;
        state
            .bytes_served
            .fetch_add(part.len() as u64, Ordering::Relaxed);
    }
    stream.flush().await
}

/// A stable tag of a body: its length and a hash of its first and last bytes.
fn etag(body: &Bytes) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let head = &body[..body.len().min(4096)];
    let tail = &body[body.len().saturating_sub(4096)..];
    for &byte in head.iter().chain(tail) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:x}-{hash:016x}", body.len())
}
