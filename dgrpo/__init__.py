"""dgrpo: one trainer for SFT, KD, GRPO, on-policy distillation (OPD) and dGRPO."""
