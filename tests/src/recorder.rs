//! An HTTP recorder between Strata and ClickHouse: forwards every request and answer unchanged
//! and keeps each request (its URL and decoded body), so a test can see every statement the
//! code sends — values bound as the client binds them — and send them again to another server.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as ClickHouse received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path and query string (`/?database=…&query=…`).
    pub target: String,
    /// The body, chunked transfer encoding removed (still compressed when the URL says
    /// `decompress=1`).
    pub body: Vec<u8>,
}

/// A recorder listening on loopback.
pub struct Recorder {
    /// The port to point clients at.
    pub port: u16,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (target, log2) = (target.to_owned(), log.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, log) = (target.clone(), log2.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        let _ = relay(client, server, log).await;
                    }
                });
            }
        });
        Ok(Self { port, log, task })
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    log: Arc<Mutex<Vec<Recorded>>>,
) -> std::io::Result<()> {
    let (cr, mut cw) = client.into_split();
    let (sr, mut sw) = server.into_split();
    let (mut cr, mut sr) = (BufReader::new(cr), BufReader::new(sr));
    loop {
        let Some((head, raw, body)) = message(&mut cr, true).await? else {
            return Ok(());
        };
        let target = String::from_utf8_lossy(&head)
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        log.lock().unwrap().push(Recorded { target, body });
        sw.write_all(&head).await?;
        sw.write_all(&raw).await?;
        let Some((head, raw, _)) = message(&mut sr, false).await? else {
            return Ok(());
        };
        cw.write_all(&head).await?;
        cw.write_all(&raw).await?;
    }
}

/// Reads one HTTP/1.1 message: (head, body as sent, body without chunk framing). A request
/// without a length has no body; an answer without one runs to the end of the connection.
async fn message<R: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    request: bool,
) -> std::io::Result<Option<(Vec<u8>, Vec<u8>, Vec<u8>)>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Ok(None);
        }
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let (mut raw, mut body) = (Vec::new(), Vec::new());
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).await?;
            raw.extend_from_slice(&line);
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&line)
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("0"),
                16,
            )
            .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).await?;
            raw.extend_from_slice(&chunk);
            body.extend_from_slice(&chunk[..size]);
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        raw = vec![0; n];
        r.read_exact(&mut raw).await?;
        body = raw.clone();
    } else if !request {
        r.read_to_end(&mut raw).await?;
        body = raw.clone();
    }
    Ok(Some((head, raw, body)))
}

/// The data of a body compressed in ClickHouse's native blocks (16-byte checksum, method
/// byte, compressed and uncompressed sizes, then the data; method 0x82 is LZ4, 0x02 none).
pub fn decompress(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 25 {
            return Err("a truncated compressed block".into());
        }
        let method = body[16];
        let size = u32::from_le_bytes(body[17..21].try_into().unwrap()) as usize;
        let plain = u32::from_le_bytes(body[21..25].try_into().unwrap()) as usize;
        if size < 9 || body.len() < 16 + size {
            return Err("a compressed block longer than the body".into());
        }
        let data = &body[25..16 + size];
        match method {
            0x82 => {
                out.extend(lz4_flex::block::decompress(data, plain).map_err(|e| e.to_string())?)
            }
            0x02 => out.extend_from_slice(data),
            m => return Err(format!("compression method {m:#x}")),
        }
        body = &body[16 + size..];
    }
    Ok(out)
}
