//! Fixed geometry and the block allocator.
//!
//! Every group that holds a superblock copy (sparse_super: groups 0, 1 and powers of 3, 5
//! and 7) reserves `1 + gdt_area` blocks at its start for the superblock and the group
//! descriptor table. Those offsets do not depend on the final filesystem size, so file data
//! can be streamed to disk before the size is known. Everything else (inode tables, bitmaps,
//! directories, extent blocks, journal) is placed after the data at `finish`; flex_bg allows
//! metadata to live anywhere.

pub const BLOCK_SIZE: u64 = 4096;
pub const BLOCKS_PER_GROUP: u64 = 32768;
pub const INODE_SIZE: u64 = 256;
pub const DESC_SIZE: u64 = 64;
pub const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE;
/// Inodes in one group can not exceed the bits of one bitmap block.
pub const MAX_INODES_PER_GROUP: u64 = BLOCK_SIZE * 8;
/// Longest initialized extent.
pub const MAX_EXTENT_LEN: u64 = 32768;

/// Whether group `g` carries a superblock/GDT backup under sparse_super.
pub fn is_backup_group(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut p = base;
        while p < g {
            p *= base;
        }
        p == g
    })
}

/// The first backup group strictly after `g`.
pub fn next_backup_group(g: u64) -> u64 {
    if g < 1 {
        return 1;
    }
    [3u64, 5, 7]
        .iter()
        .map(|&base| {
            let mut p = base;
            while p <= g {
                p *= base;
            }
            p
        })
        .min()
        .unwrap_or(u64::MAX)
}

pub fn gdt_blocks(groups: u64) -> u64 {
    (groups * DESC_SIZE).div_ceil(BLOCK_SIZE)
}

/// Reserved GDT blocks (resize_inode) so that a filesystem of `blocks` can grow 1024-fold
/// (capped at 2^32 blocks and at the 1024 entries of the resize inode's index block).
pub fn reserved_gdt_for(blocks: u64) -> u64 {
    let max_blocks = (blocks.saturating_mul(1024)).min(u32::MAX as u64);
    let max_groups = max_blocks.div_ceil(BLOCKS_PER_GROUP);
    (gdt_blocks(max_groups).saturating_sub(gdt_blocks(blocks.div_ceil(BLOCKS_PER_GROUP)))).min(1024)
}

/// Bump allocator over the block space that steps over the superblock/GDT areas.
#[derive(Debug, Clone)]
pub struct Allocator {
    next: u64,
    gdt_area: u64,
    /// Start of the next reserved area at or after `next`.
    limit: u64,
}

impl Allocator {
    pub fn new(gdt_area: u64) -> Self {
        let mut a = Allocator {
            next: 0,
            gdt_area,
            limit: 0,
        };
        a.skip_reserved();
        a
    }

    pub fn resume(gdt_area: u64, next: u64) -> Self {
        let mut a = Allocator {
            next,
            gdt_area,
            limit: 0,
        };
        a.skip_reserved();
        a
    }

    /// First block not yet handed out.
    pub fn next(&self) -> u64 {
        self.next
    }

    fn skip_reserved(&mut self) {
        let g = self.next / BLOCKS_PER_GROUP;
        let in_group = self.next % BLOCKS_PER_GROUP;
        if is_backup_group(g) && in_group < 1 + self.gdt_area {
            self.next = g * BLOCKS_PER_GROUP + 1 + self.gdt_area;
        }
        let g = self.next / BLOCKS_PER_GROUP;
        self.limit = next_backup_group(g).saturating_mul(BLOCKS_PER_GROUP);
    }

    /// Up to `max` physically contiguous blocks; returns (start, len), len >= 1.
    pub fn alloc_run(&mut self, max: u64) -> (u64, u64) {
        if self.next >= self.limit {
            self.skip_reserved();
        }
        let start = self.next;
        let len = max.min(self.limit - start).max(1);
        self.next += len;
        (start, len)
    }

    /// `n` contiguous blocks, skipping ahead past a reserved area if needed.
    pub fn alloc_contig(&mut self, n: u64) -> u64 {
        loop {
            if self.next >= self.limit {
                self.skip_reserved();
            }
            if self.limit - self.next >= n {
                let start = self.next;
                self.next += n;
                return start;
            }
            self.next = self.limit;
            // A run longer than the space between two reserved areas can not exist; the
            // callers only ask for less than a group, which always fits after one skip.
            if n >= BLOCKS_PER_GROUP {
                let start = self.next;
                self.next += n;
                return start;
            }
        }
    }

    /// `n` blocks as few runs as possible.
    pub fn alloc_extents(&mut self, mut n: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while n > 0 {
            let (s, l) = self.alloc_run(n.min(MAX_EXTENT_LEN));
            match out.last_mut() {
                Some((ps, pl)) if *ps + *pl == s && *pl + l <= MAX_EXTENT_LEN => *pl += l,
                _ => out.push((s, l)),
            }
            n -= l;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_groups() {
        let got: Vec<u64> = (0..130).filter(|&g| is_backup_group(g)).collect();
        assert_eq!(got, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125]);
        assert_eq!(next_backup_group(0), 1);
        assert_eq!(next_backup_group(1), 3);
        assert_eq!(next_backup_group(9), 25);
        assert_eq!(next_backup_group(125), 243);
    }

    #[test]
    fn reserved_gdt() {
        // 1 GiB: room for 1024 GiB = 8192 groups = 128 GDT blocks, one in use.
        assert_eq!(reserved_gdt_for(262_144), 127);
        assert_eq!(reserved_gdt_for(1 << 32), 0);
    }

    #[test]
    fn gdt_size() {
        assert_eq!(gdt_blocks(1), 1);
        assert_eq!(gdt_blocks(64), 1);
        assert_eq!(gdt_blocks(65), 2);
    }

    #[test]
    fn allocator_skips_reserved_areas() {
        let mut a = Allocator::new(2);
        assert_eq!(a.alloc_run(10), (3, 10));
        // Runs stop at the start of group 1's superblock copy.
        let (s, l) = a.alloc_run(u64::MAX);
        assert_eq!((s, s + l), (13, BLOCKS_PER_GROUP));
        assert_eq!(a.alloc_run(1), (BLOCKS_PER_GROUP + 3, 1));
        // Group 2 has no copy: contiguous across the 1→2 boundary.
        let start = a.alloc_contig(BLOCKS_PER_GROUP);
        assert_eq!(start, BLOCKS_PER_GROUP + 4);
        let mut b = Allocator::resume(2, 3 * BLOCKS_PER_GROUP - 5);
        assert_eq!(b.alloc_contig(10), 3 * BLOCKS_PER_GROUP + 3);
        let mut c = Allocator::resume(2, 3 * BLOCKS_PER_GROUP - 5);
        assert_eq!(
            c.alloc_extents(10),
            vec![(3 * BLOCKS_PER_GROUP - 5, 5), (3 * BLOCKS_PER_GROUP + 3, 5)]
        );
    }
}
