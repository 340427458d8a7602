"""arquitecturas report: its seven CNN experiments as configs; common.py holds what they share."""
