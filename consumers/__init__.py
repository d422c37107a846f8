"""The fleet: one runtime (consume a batch → validate → features → predict → produce → commit) and the duration, tip and cost services declared on it."""
