//! Length-prefixed frames: a u32 big-endian length, then that many bytes of JSON holding an
//! [`Envelope`].
//!
//! The limit is checked against the length prefix before anything is allocated, so a peer cannot
//! make us buffer more than `max_frame` bytes. After [`Error::FrameTooLarge`] the stream is out of
//! step and must be closed.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::messages::{Envelope, PROTOCOL_VERSION};

pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;
const HEADER: usize = 4;

/// One frame, header included, ready to write.
pub fn encode<M: Serialize>(message: &M, max_frame: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; HEADER];
    serde_json::to_writer(&mut buf, &Envelope::new(message)).map_err(Error::Malformed)?;
    let len = buf.len() - HEADER;
    let prefix =
        u32::try_from(len)
            .ok()
            .filter(|_| len <= max_frame)
            .ok_or(Error::FrameTooLarge {
                len,
                max: max_frame,
            })?;
    buf[..HEADER].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

/// A frame's body, without its header: checks the version before reading the message, so a peer
/// on another version gets [`Error::UnsupportedVersion`] rather than a confusing field error.
pub fn decode<M: DeserializeOwned>(body: &[u8]) -> Result<M> {
    #[derive(serde::Deserialize)]
    struct Version {
        version: u32,
    }
    let Version { version } = serde_json::from_slice(body).map_err(Error::Malformed)?;
    if version != PROTOCOL_VERSION {
        return Err(Error::UnsupportedVersion { got: version });
    }
    let envelope: Envelope<M> = serde_json::from_slice(body).map_err(Error::Malformed)?;
    Ok(envelope.message)
}

/// Reads frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        FrameReader {
            inner,
            // Room for a typical frame, so small frames are read in one go.
            buf: Vec::with_capacity(8 * 1024),
            max_frame,
        }
    }

    /// The next message.
    ///
    /// Cancel-safe: bytes read so far stay buffered, so this can sit in a `select!` next to
    /// timers without losing half a frame.
    pub async fn recv<M: DeserializeOwned>(&mut self) -> Result<M> {
        loop {
            if let Some(len) = self.pending_len()? {
                if self.buf.len() >= HEADER + len {
                    let message = decode(&self.buf[HEADER..HEADER + len]);
                    self.buf.drain(..HEADER + len);
                    return message;
                }
                self.buf.reserve(HEADER + len - self.buf.len());
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(match self.pending_len()? {
                    None if self.buf.is_empty() => Error::Closed,
                    len => Error::TruncatedFrame {
                        received: self.buf.len(),
                        expected: HEADER + len.unwrap_or(0),
                    },
                });
            }
        }
    }

    /// The body length of the frame at the front of the buffer, once its header is in.
    fn pending_len(&self) -> Result<Option<usize>> {
        let Some(header) = self.buf.first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > self.max_frame {
            return Err(Error::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(Some(len))
    }
}

/// Writes frames to a byte stream.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    max_frame: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W, max_frame: usize) -> Self {
        FrameWriter { inner, max_frame }
    }

    /// Writes and flushes one message. A message over the limit is refused before any byte is
    /// written, so the stream stays usable. Not cancel-safe: a cancelled send leaves the stream
    /// out of step, so callers bound it with a timeout and drop the connection on expiry.
    pub async fn send<M: Serialize>(&mut self, message: &M) -> Result<()> {
        let frame = encode(message, self.max_frame)?;
        self.inner.write_all(&frame).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// [`send`](Self::send), given up after `limit`: a peer that stops reading (or a link that
    /// silently drops everything) must not wedge the sender. After a timeout, drop the stream.
    pub async fn send_within<M: Serialize>(&mut self, message: &M, limit: Duration) -> Result<()> {
        tokio::time::timeout(limit, self.send(message))
            .await
            .map_err(|_| Error::Timeout {
                what: "writing a frame",
                after: limit,
            })?
    }
}

#[cfg(test)]
mod tests {
    use splai_scheduler::Heartbeat;
    use tokio::io::{AsyncWriteExt, duplex};

    use super::*;
    use crate::messages::AgentMessage;

    fn heartbeat(worker: &str) -> AgentMessage {
        AgentMessage::Heartbeat(Heartbeat {
            worker: worker.into(),
            incarnation: 1,
            ..Heartbeat::default()
        })
    }

    fn raw_frame(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    #[tokio::test]
    async fn messages_round_trip_in_order() {
        let (a, b) = duplex(64);
        let mut writer = FrameWriter::new(a, DEFAULT_MAX_FRAME);
        let mut reader = FrameReader::new(b, DEFAULT_MAX_FRAME);
        let send = async {
            for w in ["w1", "w2", "w3"] {
                writer.send(&heartbeat(w)).await.unwrap();
            }
        };
        let recv = async {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(reader.recv::<AgentMessage>().await.unwrap());
            }
            got
        };
        let ((), got) = tokio::join!(send, recv);
        assert_eq!(got, vec![heartbeat("w1"), heartbeat("w2"), heartbeat("w3")]);
    }

    #[tokio::test]
    async fn an_oversized_length_prefix_is_refused_before_its_body_arrives() {
        let (mut a, b) = duplex(64);
        a.write_all(&9_000_000u32.to_be_bytes()).await.unwrap();
        let mut reader = FrameReader::new(b, DEFAULT_MAX_FRAME);
        let err = reader.recv::<AgentMessage>().await.unwrap_err();
        assert!(matches!(
            err,
            Error::FrameTooLarge {
                len: 9_000_000,
                max: DEFAULT_MAX_FRAME
            }
        ));
        assert_eq!(
            err.to_string(),
            "frame of 9000000 bytes exceeds the 4194304-byte limit"
        );
    }

    #[tokio::test]
    async fn an_oversized_message_is_not_written() {
        let (a, _b) = duplex(64);
        let mut writer = FrameWriter::new(a, 16);
        let err = writer.send(&heartbeat("w1")).await.unwrap_err();
        assert!(matches!(err, Error::FrameTooLarge { max: 16, .. }), "{err}");
    }

    #[tokio::test]
    async fn a_body_that_is_not_json_is_malformed() {
        let (mut a, b) = duplex(64);
        a.write_all(&raw_frame(b"\xff{not json")).await.unwrap();
        let err = FrameReader::new(b, DEFAULT_MAX_FRAME)
            .recv::<AgentMessage>()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
        assert!(err.to_string().starts_with("malformed message: "), "{err}");
    }

    #[tokio::test]
    async fn an_unknown_message_type_is_malformed() {
        let (mut a, b) = duplex(256);
        a.write_all(&raw_frame(br#"{"version":1,"message":{"type":"reboot"}}"#))
            .await
            .unwrap();
        let err = FrameReader::new(b, DEFAULT_MAX_FRAME)
            .recv::<AgentMessage>()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `reboot`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn another_protocol_version_is_named_in_the_error() {
        let (mut a, b) = duplex(256);
        a.write_all(&raw_frame(br#"{"version":9,"message":{"type":"future"}}"#))
            .await
            .unwrap();
        let err = FrameReader::new(b, DEFAULT_MAX_FRAME)
            .recv::<AgentMessage>()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { got: 9 }), "{err}");
    }

    #[tokio::test]
    async fn a_clean_close_between_frames_is_closed() {
        let (a, b) = duplex(64);
        drop(a);
        let err = FrameReader::new(b, DEFAULT_MAX_FRAME)
            .recv::<AgentMessage>()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Closed));
        assert_eq!(err.to_string(), "peer closed the connection");
    }

    #[tokio::test]
    async fn a_close_in_the_middle_of_a_frame_is_truncated() {
        let (mut a, b) = duplex(64);
        a.write_all(&raw_frame(b"{\"version\":1}")[..8])
            .await
            .unwrap();
        drop(a);
        let err = FrameReader::new(b, DEFAULT_MAX_FRAME)
            .recv::<AgentMessage>()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::TruncatedFrame {
                    received: 8,
                    expected: 17
                }
            ),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_receive_cancelled_mid_frame_loses_nothing() {
        let (mut a, b) = duplex(1024);
        let frame = encode(&heartbeat("w1"), DEFAULT_MAX_FRAME).unwrap();
        let mut reader = FrameReader::new(b, DEFAULT_MAX_FRAME);
        a.write_all(&frame[..10]).await.unwrap();
        let timed_out =
            tokio::time::timeout(Duration::from_secs(1), reader.recv::<AgentMessage>()).await;
        assert!(timed_out.is_err());
        a.write_all(&frame[10..]).await.unwrap();
        assert_eq!(
            reader.recv::<AgentMessage>().await.unwrap(),
            heartbeat("w1")
        );
    }
}
