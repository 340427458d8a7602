"""p2cnn report (P2_CNN_HfaJrc): experiments exp1-exp8 as configs; common.py holds what they share."""
