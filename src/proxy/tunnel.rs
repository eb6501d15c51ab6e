//! Protocol switches (WebSocket and other HTTP/1.1 upgrades): after the peer's `101`,
//! both connections are handed to a [`Tunnel`] that copies bytes both ways until
//! either side closes. Its access line (status 101, the bytes to the client, the
//! session's duration) is written when it closes, or when the gateway stops with it
//! open.

use super::log::{End, Record};
use crate::observe::access::Source;
use bytes::Bytes;
use std::sync::Arc;

/// Both sides of a protocol switch.
pub struct Tunnel {
    pub id: Arc<str>,
    pub client_side: hyper::upgrade::OnUpgrade,
    pub upstream: crate::upstream::h1::Stream,
    /// What the peer sent right after its `101`.
    pub early: Bytes,
}

impl Tunnel {
    /// Relay until either side closes, then finish the record. The tunnel holds no
    /// lease (a long-lived WebSocket is not an outstanding request) and ends when the
    /// peer's process does.
    pub async fn run(mut self, mut rec: Record) {
        rec.if_unfinished(
            101,
            Source::Upstream,
            "tunnel cut: the gateway stopped with it open",
        );
        let (bytes, details) = match self.relay().await {
            Ok((up, down)) => (
                down,
                format!("tunnel closed: {up} bytes to the peer, {down} to the client"),
            ),
            Err(why) => (0, format!("tunnel ended: {why}")),
        };
        tracing::debug!("{}: {details}", self.id);
        rec.finish(End {
            status: 101,
            bytes,
            source: Source::Upstream,
            error: None,
            details: Some(details),
        });
    }

    async fn relay(&mut self) -> Result<(u64, u64), String> {
        use tokio::io::AsyncWriteExt;
        let client = (&mut self.client_side)
            .await
            .map_err(|e| format!("the client's side of the upgrade failed: {e}"))?;
        let mut client = hyper_util::rt::TokioIo::new(client);
        if !self.early.is_empty() {
            client
                .write_all(&self.early)
                .await
                .map_err(|e| e.to_string())?;
        }
        let (up, down) = tokio::io::copy_bidirectional(&mut client, &mut self.upstream)
            .await
            .map_err(|e| e.to_string())?;
        Ok((up, down + self.early.len() as u64))
    }
}
