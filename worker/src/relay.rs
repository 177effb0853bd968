//! The worker's side of a relayed ring link (see the coordinator's `relay` module): an HTTP
//! request upgraded to a raw stream that the coordinator joins with the other rank's.

use std::time::Duration;

use kiln_proto::protocol::AttemptRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `HOST:PORT` of a coordinator URL (`http://host[:port][/…]`), with the scheme's default
/// port; and whether the scheme is TLS.
pub(crate) fn authority(server: &str) -> Option<(String, bool)> {
    let (scheme, rest) = server.split_once("://")?;
    let tls = matches!(scheme, "https" | "wss");
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.is_empty() {
        return None;
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    Some(if has_port {
        (authority.to_string(), tls)
    } else {
        (format!("{authority}:{}", if tls { 443 } else { 80 }), tls)
    })
}

/// Which end of a link this is: rank `r` dials link `r`, rank `r + 1` accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Dial,
    Accept,
}

/// Open link `link` of `attempt` through the coordinator at `server`. Returns the raw stream
/// once the coordinator switched protocols (the other side may not be there yet: the first
/// bytes wait for it).
pub(crate) async fn open(
    server: &str,
    token: &str,
    worker_id: &str,
    attempt: AttemptRef,
    link: usize,
    side: Side,
) -> std::io::Result<TcpStream> {
    let bad = |m: String| std::io::Error::other(m);
    if worker_id.chars().any(char::is_control) || token.chars().any(char::is_control) {
        return Err(bad(
            "the worker id and the token must not hold control characters".into(),
        ));
    }
    let (addr, tls) = authority(server).ok_or_else(|| bad(format!("bad server URL {server}")))?;
    if tls {
        return Err(bad(
            "relaying ring links through an https coordinator is not supported yet".into(),
        ));
    }
    let mut stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&addr))
        .await
        .map_err(|_| bad(format!("connecting to {addr} timed out")))??;
    stream.set_nodelay(true)?;
    let side = match side {
        Side::Dial => "dial",
        Side::Accept => "accept",
    };
    let request = format!(
        "GET /api/relay/{}/{}/{link}?side={side} HTTP/1.1\r\nHost: {addr}\r\n\
         Connection: Upgrade\r\nUpgrade: kiln-ring\r\nAuthorization: Bearer {token}\r\n\
         X-Kiln-Worker: {worker_id}\r\n\r\n",
        attempt.job_id, attempt.attempt
    );
    stream.write_all(request.as_bytes()).await?;
    // The response head, byte by byte: what follows it belongs to the ring.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(bad(
                "the coordinator's answer to a relay request is too long".into(),
            ));
        }
        head.push(stream.read_u8().await?);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 101 ") {
        return Err(bad(format!("the coordinator refused the relay: {status}")));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_adds_default_ports_and_drops_paths() {
        assert_eq!(
            authority("http://10.0.0.1:8080/x"),
            Some(("10.0.0.1:8080".into(), false))
        );
        assert_eq!(
            authority("https://kiln.example"),
            Some(("kiln.example:443".into(), true))
        );
        assert_eq!(authority("ws://[::1]:7"), Some(("[::1]:7".into(), false)));
        assert_eq!(authority("http://[::1]"), Some(("[::1]:80".into(), false)));
        assert_eq!(authority("kiln.example"), None);
    }
}
