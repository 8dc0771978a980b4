"""The conformance suite's library: oracle, comparators, checkpoint inspection."""
