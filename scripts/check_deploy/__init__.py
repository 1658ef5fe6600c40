"""Static checks of the Audio-Alchemist deployment files (see scripts/check-deploy)."""
