"""proyecto4 report (Proyecto IV): experiments exp1-exp10 as configs; common.py holds what they share."""
