//! Unit tests of the exchange over real loopback sockets: early answers, and the
//! clocks of `Connection::send` (client body, peer, response head).

use super::*;
use tokio::io::AsyncWriteExt;

/// A connection to a loopback peer, and the peer's end.
async fn pair() -> (Connection, TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (peer, _) = l.accept().await.unwrap();
    (Connection::new(Stream::Plain(c)), peer)
}

/// `early_answer` once `want` bytes of the peer's answer have been read.
async fn early_after(conn: &mut Connection, want: usize) -> bool {
    for _ in 0..1000 {
        let early = conn.early_answer(&Method::POST, 1024);
        if conn.buf.len() >= want || early {
            return early;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!(
        "the peer's bytes never arrived ({} of {want})",
        conn.buf.len()
    );
}

#[tokio::test]
async fn early_answers_are_final_ones_only() {
    let (mut conn, mut peer) = pair().await;
    assert!(!conn.early_answer(&Method::POST, 1024), "nothing yet");
    // A prefix that may still become `100 Continue` is not an answer yet ...
    peer.write_all(b"HTTP/1.").await.unwrap();
    assert!(!early_after(&mut conn, 7).await);
    // ... and a whole interim answer is consumed, not counted.
    peer.write_all(b"1 100 Continue\r\n\r\n").await.unwrap();
    for _ in 0..1000 {
        assert!(!conn.early_answer(&Method::POST, 1024));
        if conn.buf.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(conn.buf.is_empty(), "the 100 was consumed");
    peer.write_all(b"HTTP/1.1 413 Payload Too Large\r\n")
        .await
        .unwrap();
    assert!(
        early_after(&mut conn, usize::MAX).await,
        "a final answer started"
    );
}

/// A client body: `frames` pieces of `size` bytes, one every `pace`; after them it
/// ends, or with `stall` never does (nor sends anything more).
struct Paced {
    left: usize,
    size: usize,
    pace: Duration,
    stall: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Paced {
    fn new(frames: usize, size: usize, pace: Duration, stall: bool) -> Paced {
        Paced {
            left: frames,
            size,
            pace,
            stall,
            sleep: None,
        }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return if self.stall {
                Poll::Pending
            } else {
                Poll::Ready(None)
            };
        }
        if let Some(sleep) = self.sleep.as_mut() {
            if std::future::Future::poll(sleep.as_mut(), cx).is_pending() {
                return Poll::Pending;
            }
        }
        let pace = self.pace;
        self.sleep = Some(Box::pin(tokio::time::sleep(pace)));
        self.left -= 1;
        let data = Bytes::from(vec![b'x'; self.size]);
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }
}

fn post() -> http::request::Parts {
    http::Request::post("/upload")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// Read a chunked request to its last chunk, then answer `answer`.
async fn answer_after_upload(mut peer: TcpStream, answer: &'static [u8]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while !got.ends_with(b"0\r\n\r\n") {
        let n = peer.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the request ended early");
        got.extend_from_slice(&chunk[..n]);
    }
    peer.write_all(answer).await.unwrap();
    got.len()
}

async fn send_with(
    conn: &mut Connection,
    body: &mut Paced,
    response_header: Duration,
    client_body: Duration,
) -> Result<Head, ProxyError> {
    let parts = post();
    let request = Outgoing {
        parts: &parts,
        added: &[],
        upgrade: false,
    };
    let deadlines = Deadlines::new();
    let timeouts = Timeouts {
        deadlines: &deadlines,
        response_header,
        client_body,
    };
    conn.send("up#1", request, body, 64 * 1024, &timeouts).await
}

#[tokio::test]
async fn the_response_clock_starts_once_the_request_is_sent() {
    let (mut conn, peer) = pair().await;
    let peer = tokio::spawn(answer_after_upload(
        peer,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ));
    // Five pieces 100 ms apart: the upload takes longer than response_header.
    let mut body = Paced::new(5, 1000, Duration::from_millis(100), false);
    let start = Instant::now();
    let head = send_with(
        &mut conn,
        &mut body,
        Duration::from_millis(200),
        Duration::from_secs(5),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(peer.await.unwrap() > 5000, "the whole body went up");
}

#[tokio::test]
async fn a_stalled_client_body_is_the_clients_timeout() {
    let (mut conn, _peer) = pair().await;
    let mut body = Paced::new(1, 100, Duration::ZERO, true);
    let start = Instant::now();
    let e = send_with(
        &mut conn,
        &mut body,
        Duration::from_secs(5),
        Duration::from_millis(200),
    )
    .await
    .err()
    .expect("a stalled body fails");
    assert_eq!(e.cause, Cause::ClientBodyTimeout, "{e}");
    assert_eq!(e.sent, Sent::Request);
    assert!(e.context.contains("client's request body stalled"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn the_peer_is_timed_while_it_takes_no_body_and_after_the_request() {
    // A peer that reads nothing: the upload blocks once the socket buffers fill.
    let (mut conn, _peer) = pair().await;
    let mut body = Paced::new(1024, 1 << 20, Duration::ZERO, false);
    let e = send_with(
        &mut conn,
        &mut body,
        Duration::from_millis(300),
        Duration::from_secs(30),
    )
    .await
    .err()
    .expect("a peer that takes nothing fails");
    assert_eq!(e.cause, Cause::ResponseTimeout, "{e}");
    assert!(e.context.contains("took none of the request body"), "{e}");
    // A peer that takes the whole request and never answers.
    let (mut conn, peer) = pair().await;
    let _reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut peer = peer;
        let mut sink = vec![0u8; 64 * 1024];
        while peer.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        std::future::pending::<()>().await
    });
    let mut body = Paced::new(2, 10, Duration::ZERO, false);
    let start = Instant::now();
    let e = send_with(
        &mut conn,
        &mut body,
        Duration::from_millis(300),
        Duration::from_secs(30),
    )
    .await
    .err()
    .expect("no answer fails");
    assert_eq!(e.cause, Cause::ResponseTimeout, "{e}");
    assert!(e.context.contains("no response header within"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}
