//! Cluster assignment: live members sorted by id (byte order) take contiguous ranges of the
//! topic's partitions; with P partitions and M members each gets P/M, the first P%M one more.
//! Pure; the same rule as Metamorphosis' default strategy, minus its string-sorted partitions.

/// The partitions of each member, in the order of `members` (which must be sorted).
pub fn ranges(members: &[&str], partitions: u32) -> Vec<Vec<u32>> {
    let m = members.len() as u32;
    if m == 0 {
        return Vec::new();
    }
    let (each, extra) = (partitions / m, partitions % m);
    let mut next = 0;
    (0..m)
        .map(|i| {
            let n = each + u32::from(i < extra);
            let range: Vec<u32> = (next..next + n).collect();
            next += n;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_partitions_over_three_members_are_four_each_in_order() {
        assert_eq!(
            ranges(&["a", "b", "c"], 12),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9, 10, 11]]
        );
    }

    #[test]
    fn the_first_members_take_the_remainder_and_extra_members_get_nothing() {
        assert_eq!(
            ranges(&["a", "b", "c"], 5),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        assert_eq!(ranges(&["a", "b", "c"], 2), vec![vec![0], vec![1], vec![]]);
    }

    #[test]
    fn every_partition_has_exactly_one_owner() {
        for m in 1..9usize {
            for p in 0..40u32 {
                let names: Vec<String> = (0..m).map(|i| format!("m{i}")).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let mut all: Vec<u32> = ranges(&refs, p).into_iter().flatten().collect();
                all.sort();
                assert_eq!(all, (0..p).collect::<Vec<_>>());
            }
        }
    }
}
