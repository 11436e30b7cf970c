//! Which `__consumer_offsets` partition holds a group, and so which broker coordinates it:
//! Kafka's `abs(groupId.hashCode()) % offsets.topic.num.partitions`, with Java's `String.hashCode`
//! and Kafka's `Utils.abs`, so a group lands where a Kafka broker would put it (tools that
//! compute it, and data moved between the two, agree).

/// `offsets.topic.num.partitions`'s default.
pub const OFFSETS_TOPIC_NUM_PARTITIONS: i32 = 50;

/// The `__consumer_offsets` partition of `group_id`, among `partitions`.
pub fn offsets_partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = java_string_hash(group_id);
    // Kafka's `Utils.abs`: `Integer.MIN_VALUE` maps to 0, not to itself.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, wrapping.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_javas() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("abc"), 96354);
        assert_eq!(java_string_hash("hello"), 99162322);
        // Outside the basic plane: two UTF-16 units, as Java counts them.
        assert_eq!(java_string_hash("😀"), 0xD83D * 31 + 0xDE00);
        // The string whose hash is Integer.MIN_VALUE, Kafka's reason for `Utils.abs`.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn groups_land_where_kafka_puts_them() {
        assert_eq!(offsets_partition_for("polygenelubricants", 50), 0);
        assert_eq!(offsets_partition_for("hello", 50), 99162322 % 50);
        assert_eq!(
            offsets_partition_for("abc", OFFSETS_TOPIC_NUM_PARTITIONS),
            4
        );
        // A negative hash is made positive first: "my-group" hashes to -1906497762.
        assert_eq!(java_string_hash("my-group"), -1906497762);
        assert_eq!(offsets_partition_for("my-group", 50), 12);
    }
}
