//! Read buffers lent to client connections only while they have bytes to hold.
//!
//! A keep-alive connection from a client spends most of its life waiting for its next
//! request. A buffer of its own for that whole time costs at least a touched page per
//! connection (4 MiB for 1,000 idle connections, 40 MiB for 10,000), and every request reads
//! into a different, cold buffer. Here a connection holds a buffer only while bytes are in
//! it (or a request parsed from it still refers to it): a read that finds nothing gives its
//! buffer back to a per-thread stack of spares, and the next read, wherever its connection,
//! takes the one most recently used. nginx frees an idle keep-alive connection's buffers the
//! same way.
//!
//! Only buffers of the standard size are lent: one that grew for its connection's traffic
//! (a body read up to 64 KiB at a time) stays with that connection. Connections to origins
//! keep their own buffers: lending those too saved memory under 1,000 busy connections, but
//! their buffers, grown to fit their origin's answers, then went to other connections, and
//! an answer of 32 KiB took two reads and two writes instead of one (`docs/performance.md`).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncRead;

/// The room a lent buffer has, at least.
pub(crate) const READ_BUFFER: usize = 8 * 1024;
/// Spare buffers kept per thread, at most (256 KiB).
const KEPT: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Reads from `io` into `buf` with room for at least `want` bytes. A `buf` without memory
/// takes a spare buffer first; if it is still empty afterwards (nothing arrived, the end of
/// the stream, an error), its buffer goes back to the spares (see [`give_back`]).
pub(crate) fn poll_read<R: AsyncRead + ?Sized>(
    io: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    want: usize,
) -> Poll<io::Result<usize>> {
    make_room(buf, want);
    let read = tokio_util::io::poll_read_buf(io, cx, buf);
    if buf.is_empty() {
        give_back(buf);
    }
    read
}

/// Makes room in `buf` for at least `want` more bytes: a spare buffer if it has no memory,
/// its own memory reclaimed in place if nothing refers to it any more, or more memory.
fn make_room(buf: &mut BytesMut, want: usize) {
    // An emptied buffer whose memory is free again is used again, at its size.
    if buf.capacity() - buf.len() >= want || buf.try_reclaim(want) {
        return;
    }
    if buf.capacity() == 0 {
        *buf = take();
    }
    buf.reserve(want);
}

/// Gives the memory of `buf` back to the spares if it holds no bytes, its memory is its
/// own again and of the standard size, leaving `buf` without any (freed if the spares are
/// full). A buffer whose memory a response or body still refers to stays as it is (its
/// connection reads into it again once that is gone, rather than free it and take
/// another), and so does one that grew past the standard size (see the module's doc).
fn give_back(buf: &mut BytesMut) {
    if !buf.is_empty()
        || buf.capacity() == 0
        || !buf.try_reclaim(READ_BUFFER)
        || buf.capacity() > READ_BUFFER
    {
        return;
    }
    let spent = std::mem::take(buf);
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(spent);
        }
    });
}

/// A spare buffer (the one given back last), or a new one.
fn take() -> BytesMut {
    SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_BUFFER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;
    use tokio::io::AsyncWriteExt;

    fn spares() -> usize {
        SPARE.with(|spare| spare.borrow().len())
    }

    #[tokio::test]
    async fn a_read_that_finds_nothing_holds_no_buffer() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let mut cx = Context::from_waker(Waker::noop());
        let before = spares();
        assert!(poll_read(Pin::new(&mut server), &mut cx, &mut buf, READ_BUFFER).is_pending());
        assert_eq!(buf.capacity(), 0, "an idle connection holds no memory");
        assert_eq!(spares(), before + 1, "the buffer went back to the spares");

        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("an in-memory pipe takes 16 bytes");
        let read = poll_read(Pin::new(&mut server), &mut cx, &mut buf, READ_BUFFER);
        assert!(matches!(read, Poll::Ready(Ok(16))));
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
        assert_eq!(spares(), before, "the read took the spare");
    }

    #[test]
    fn a_buffer_still_shared_stays_with_its_connection() {
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        buf.extend_from_slice(b"head");
        let head = buf.split_to(4).freeze();
        let before = spares();
        give_back(&mut buf);
        assert!(buf.capacity() > 0, "kept, to be read into again");
        assert_eq!(
            spares(),
            before,
            "a buffer a response still refers to is not lent"
        );
        drop(head);
        give_back(&mut buf);
        assert_eq!(buf.capacity(), 0);
        assert_eq!(spares(), before + 1, "once free, it goes to the spares");
        assert_eq!(take().capacity(), READ_BUFFER, "the spare is lent again");

        let mut grown = BytesMut::with_capacity(4 * READ_BUFFER);
        give_back(&mut grown);
        assert_eq!(grown.capacity(), 4 * READ_BUFFER, "a grown buffer stays");
        assert_eq!(spares(), before);

        let mut small = BytesMut::with_capacity(READ_BUFFER);
        small.extend_from_slice(b"x");
        give_back(&mut small);
        assert_eq!(small.len(), 1, "a buffer holding bytes keeps them");
    }
}
