//! Hostile input: malformed, oversized and garbage requests against a real
//! cluster are refused with a 4xx and change nothing.

mod t10_malformed;
