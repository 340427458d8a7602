"""p2cnn report (P2_CNN_HfaJrc): exp1-exp8 as configs; common.py holds what they share."""
