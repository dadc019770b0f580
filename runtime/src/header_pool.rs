//! A per-thread pool of emptied header maps.
//!
//! A proxied request builds two maps on the direct HTTP/1.1 paths: the request's own (which
//! travels upstream) and the upstream response's (which travels downstream), at two
//! allocations each. Once a map has been written out it is cleared and kept here, and the
//! next request's parse takes it instead of allocating.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread, at most.
const KEPT: usize = 64;
/// Maps with room for more fields than this are freed, not kept: a rare huge head should
/// not pin its memory.
const MAX_KEPT_CAPACITY: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for at least `fields` fields; a pooled one when there is one.
pub(crate) fn take(fields: usize) -> HeaderMap {
    match POOL.with(|pool| pool.borrow_mut().pop()) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Clears `map` (dropping its names and values now) and keeps its memory for reuse.
pub(crate) fn give_back(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    map.clear();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < KEPT {
            pool.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_returned_map_comes_back_empty_with_its_room() {
        let mut map = take(6);
        let room = map.capacity();
        assert!(room >= 6);
        map.insert("x-a", HeaderValue::from_static("1"));
        give_back(map);
        let again = take(2);
        assert!(again.is_empty());
        assert!(again.capacity() >= room.min(MAX_KEPT_CAPACITY));
        let bigger = take(40);
        assert!(bigger.capacity() >= 40);
    }

    #[test]
    fn maps_too_large_are_not_kept() {
        POOL.with(|pool| pool.borrow_mut().clear());
        give_back(HeaderMap::with_capacity(1000));
        assert_eq!(POOL.with(|pool| pool.borrow().len()), 0);
    }
}
