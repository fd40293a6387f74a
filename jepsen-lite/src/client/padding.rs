//! Values of a chosen size. A workload's unique value (`7-31`) is sent as
//! that value followed by a check pattern up to `--value-size` bytes, and
//! every value read back is checked against the pattern and reduced to the
//! unique value again. Histories, models and checkers only ever see the
//! short value, so a run with 1 MiB values keeps a history of normal size.
//!
//! The pattern is the unique value and a separator repeated
//! (`7-31|7-31|7-3…`): it depends on the value, so a read that returns the
//! right prefix with another value's filler, a truncated value or a corrupt
//! byte anywhere is not reduced to a written value; it is reported as a
//! value nobody wrote (the register checker's `phantom_value`).

/// Separates the unique value from its filler. Unique values are
/// `<process>-<counter>`, so it never occurs in one.
const SEPARATOR: char = '|';

/// Smallest `--value-size`: the longest unique value (two `u64`s and a dash,
/// 41 bytes) and a separator, rounded up.
pub const MIN_VALUE_SIZE: usize = 64;

/// ballastd's default `--max-value-bytes` (1.5 MiB, as in etcd): the largest
/// value a node accepts unless it is started with another limit.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1536 * 1024;

/// Why a value size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaddingError {
    /// Too small to hold a unique value and its check pattern.
    #[error("--value-size {size} is too small: values need at least {MIN_VALUE_SIZE} bytes (the unique value, a separator and a check pattern)")]
    TooSmall {
        /// Requested size.
        size: usize,
    },
    /// Larger than the nodes accept.
    #[error("--value-size {size} is over ballast's maximum value size of {max} bytes (ballastd --max-value-bytes); every write would be refused")]
    TooLarge {
        /// Requested size.
        size: usize,
        /// The nodes' limit.
        max: usize,
    },
}

/// How values are sized on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Padding {
    /// Total size of every value sent; `None`: the unique value alone.
    size: Option<usize>,
}

impl Padding {
    /// Unique values as they are, unpadded.
    pub fn none() -> Self {
        Self { size: None }
    }

    /// Values of exactly `size` bytes, for nodes that accept at most `max`.
    pub fn to_size(size: usize, max: usize) -> Result<Self, PaddingError> {
        if size < MIN_VALUE_SIZE {
            return Err(PaddingError::TooSmall { size });
        }
        if size > max {
            return Err(PaddingError::TooLarge { size, max });
        }
        Ok(Self { size: Some(size) })
    }

    /// The size of every value sent, if padded.
    pub fn size(&self) -> Option<usize> {
        self.size
    }

    /// The value sent for the unique value `base`.
    pub fn pad(&self, base: &str) -> String {
        let Some(size) = self.size else {
            return base.to_string();
        };
        let mut out = String::with_capacity(size.max(base.len()));
        out.push_str(base);
        let unit = format!("{SEPARATOR}{base}");
        while out.len() < size {
            let take = (size - out.len()).min(unit.len());
            // ASCII only (digits, dash, separator): any byte is a boundary.
            out.push_str(&unit[..take]);
        }
        out
    }

    /// The unique value inside a value read back. A value that is not
    /// exactly what [`Padding::pad`] makes of its prefix comes back as a
    /// description (`<malformed …>`) that no workload ever writes.
    pub fn unpad(&self, read: &str) -> String {
        let Some(size) = self.size else {
            return read.to_string();
        };
        let base = read.split(SEPARATOR).next().unwrap_or_default();
        // `pad` makes `base|base|ba…`: the cycle of `base|`, cut at `size`.
        let pattern = format!("{base}{SEPARATOR}");
        let intact = read.len() == size
            && !base.is_empty()
            && read
                .bytes()
                .zip(pattern.bytes().cycle())
                .all(|(a, b)| a == b);
        if intact {
            base.to_string()
        } else {
            let head: String = read.chars().take(24).collect();
            format!(
                "<malformed {} of {size} bytes, starting {head:?}>",
                read.len()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_the_exact_size_and_back() {
        for size in [MIN_VALUE_SIZE, 65, 100, 4096, 1 << 20] {
            let p = Padding::to_size(size, DEFAULT_MAX_VALUE_BYTES).expect("valid size");
            for base in ["1-1", "7-31", "18446744073709551615-18446744073709551615"] {
                let v = p.pad(base);
                assert_eq!(v.len(), size, "{base} padded to {size}");
                assert!(v.starts_with(base));
                assert_eq!(p.unpad(&v), base);
            }
        }
        assert_eq!(Padding::none().pad("3-4"), "3-4");
        assert_eq!(Padding::none().unpad("3-4"), "3-4");
    }

    #[test]
    fn a_damaged_value_is_never_a_written_one() {
        let p = Padding::to_size(100, DEFAULT_MAX_VALUE_BYTES).expect("valid size");
        let v = p.pad("7-31");
        // Truncated, extended, one byte changed, another value's filler,
        // unpadded.
        let mut flipped = v.clone().into_bytes();
        flipped[60] = b'x';
        let flipped = String::from_utf8(flipped).expect("ascii");
        let other = format!("7-31{}", &p.pad("7-32")[4..]);
        for bad in [&v[..99], &format!("{v}1"), &flipped, &other, "7-31"] {
            let got = p.unpad(bad);
            assert!(got.starts_with("<malformed"), "{bad:?} gave {got:?}");
        }
    }

    #[test]
    fn refuses_sizes_the_nodes_cannot_take() {
        assert_eq!(
            Padding::to_size(0, DEFAULT_MAX_VALUE_BYTES),
            Err(PaddingError::TooSmall { size: 0 })
        );
        assert_eq!(
            Padding::to_size(MIN_VALUE_SIZE - 1, DEFAULT_MAX_VALUE_BYTES),
            Err(PaddingError::TooSmall {
                size: MIN_VALUE_SIZE - 1
            })
        );
        assert!(Padding::to_size(DEFAULT_MAX_VALUE_BYTES, DEFAULT_MAX_VALUE_BYTES).is_ok());
        assert_eq!(
            Padding::to_size(DEFAULT_MAX_VALUE_BYTES + 1, DEFAULT_MAX_VALUE_BYTES),
            Err(PaddingError::TooLarge {
                size: DEFAULT_MAX_VALUE_BYTES + 1,
                max: DEFAULT_MAX_VALUE_BYTES
            })
        );
    }
}
