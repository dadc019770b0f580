//! Two buffers written as one: an HTTP/1.1 head and a body frame go out in one vectored
//! write (one system call, one TCP segment when they fit), without copying the frame behind
//! the head. The server's direct path writes responses with it, the client's requests.

use std::io::{self, IoSlice};

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Writes `first` then `second`, as one vectored write when the socket takes it whole.
pub(crate) async fn write_pair<I: AsyncWrite + Unpin>(
    io: &mut I,
    first: &[u8],
    second: &[u8],
) -> io::Result<()> {
    let (mut a, mut b) = (first, second);
    while !a.is_empty() {
        let n = io
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n >= a.len() {
            b = &b[n - a.len()..];
            a = &[];
        } else {
            a = &a[n..];
        }
    }
    io.write_all(b).await
}
