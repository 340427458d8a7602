"""proyecto4 report (Proyecto IV): exp1-exp10 as configs; common.py holds what they share."""
