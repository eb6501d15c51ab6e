//! The listener's strict check of the first request head on a connection
//! (`proxy::server` `check_request_line` and `check_head`), run as the listener runs
//! it: the line check on every read, the head check once the head is complete.
//!
//! Input: the bytes a client sends. Invariants, beyond not panicking:
//! - the request line verdict is Ok until its LF arrives and then never changes as
//!   more bytes come; an accepted line ends in CRLF and is `METHOD SP TARGET SP
//!   HTTP/1.x` (or the HTTP/2 preface);
//! - the head verdict does not depend on what follows the head (later bytes are the
//!   body or the next request);
//! - an accepted complete head, parsed independently, has exactly one framing: no
//!   Transfer-Encoding with Content-Length, at most one Content-Length (digits only),
//!   a Transfer-Encoding whose last coding is chunked; and it was really parsed (a
//!   head that has its end is never waved through as "incomplete").
#![no_main]

use healgate::fuzzing::{check_head, check_request_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(lf) = data.iter().position(|&b| b == b'\n') else {
        assert!(check_request_line(data).is_ok(), "refused before its end");
        return;
    };
    assert!(
        check_request_line(&data[..lf]).is_ok(),
        "refused before its LF"
    );
    let line = check_request_line(&data[..=lf]);
    assert_eq!(
        line.is_ok(),
        check_request_line(data).is_ok(),
        "the line verdict changed as more bytes came"
    );
    if line.is_err() {
        return;
    }
    let text = &data[..lf];
    let text = text
        .strip_suffix(b"\r")
        .expect("an accepted line ends in CRLF");
    if text != b"PRI * HTTP/2.0" {
        let parts: Vec<&[u8]> = text.split(|&b| b == b' ').collect();
        assert_eq!(
            parts.len(),
            3,
            "not three parts: {:?}",
            String::from_utf8_lossy(text)
        );
        assert!(parts[2].starts_with(b"HTTP/1."), "not HTTP/1.x");
    }

    // The head is checked once it is complete, on what has been read by then.
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let head = &data[..end + 4];
    let verdict = check_head(head);
    assert_eq!(
        verdict.is_ok(),
        check_head(data).is_ok(),
        "the head verdict depends on what follows the head"
    );
    if verdict.is_err() || head.starts_with(b"PRI * HTTP/2.0\r\n") {
        return;
    }
    // As many fields as the listener parses; beyond them it leaves the head to hyper,
    // which refuses more than 100.
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut fields);
    let parsed = req.parse(head);
    match parsed {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => panic!("a head with its end accepted as incomplete"),
        // More fields than the listener parses: hyper refuses those (431/400).
        Err(httparse::Error::TooManyHeaders) => return,
        Err(e) => panic!("accepted, but httparse says {e}"),
    }
    let named = |n: &str| -> Vec<&[u8]> {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(n))
            .map(|h| h.value)
            .collect()
    };
    let te = named("transfer-encoding");
    let cl = named("content-length");
    assert!(te.is_empty() || cl.is_empty(), "TE with CL accepted");
    assert!(cl.len() <= 1, "{} Content-Length fields accepted", cl.len());
    for v in &cl {
        let v = v.trim_ascii();
        assert!(
            !v.is_empty() && v.iter().all(u8::is_ascii_digit),
            "Content-Length {:?} accepted",
            String::from_utf8_lossy(v)
        );
    }
    if let Some(last) = te.last() {
        let coding = last
            .rsplit(|&b| b == b',')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        assert!(
            coding.eq_ignore_ascii_case(b"chunked"),
            "Transfer-Encoding {:?} accepted",
            String::from_utf8_lossy(last)
        );
    }
});
