//! Fetch rules: how many stored batches one partition contributes (KIP-74: at least one
//! whole batch even above the limits, then whole batches while they fit), and when a long
//! poll may answer.

/// Picks how many of `sizes` (whole batches, in offset order) to return under a partition
/// limit and the response's remaining budget. The first batch of the response is always
/// returned (`first_in_response`), so a consumer never gets stuck behind a large batch.
/// Whether a next batch of `size` joins the `so_far` bytes already taken from a partition.
pub fn fits(
    size: usize,
    so_far: usize,
    partition_max: usize,
    remaining: usize,
    first_in_response: bool,
) -> bool {
    (so_far == 0 && first_in_response) || so_far + size <= partition_max.min(remaining)
}

pub fn take_batches(
    sizes: &[usize],
    partition_max: usize,
    remaining: usize,
    first_in_response: bool,
) -> usize {
    let mut total = 0usize;
    let mut n = 0;
    for &s in sizes {
        if !fits(s, total, partition_max, remaining, first_in_response) {
            break;
        }
        total += s;
        n += 1;
    }
    n
}

/// Whether a fetch can be answered now: enough bytes, the wait is over, or an error is
/// to be reported.
pub fn ready(bytes: usize, min_bytes: i32, waited_out: bool, has_error: bool) -> bool {
    has_error || waited_out || bytes >= min_bytes.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_one_batch() {
        assert_eq!(take_batches(&[500, 10], 100, 100, true), 1);
        assert_eq!(take_batches(&[500, 10], 100, 100, false), 0);
        assert_eq!(take_batches(&[40, 40, 40], 100, 1000, false), 2);
        assert_eq!(take_batches(&[40, 40, 40], 1000, 90, false), 2);
        assert_eq!(take_batches(&[], 1000, 90, true), 0);
    }

    #[test]
    fn long_poll_readiness() {
        assert!(!ready(0, 1, false, false));
        assert!(ready(1, 1, false, false));
        assert!(ready(0, 1, true, false));
        assert!(ready(0, 1, false, true));
        assert!(ready(0, 0, false, false));
    }
}
