"""Test-time scaling without a reward model: the policy's own token confidence (measures.py), the aggregations that
select or weight answers by it, and the stopping rules built on it."""
