"""Run configs (ml_collections), loaded by path (`--config=configs/laps_vitb.py:res=384`) or imported
(`from configs import laps_vitb`). `common.py` holds the parts they share."""
