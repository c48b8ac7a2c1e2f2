"""The loop: rounds (the stages), policy (stop rules, next round), seeding, alerts."""
