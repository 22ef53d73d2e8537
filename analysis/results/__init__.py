"""The result model (`Fitted`, `Analysis`) and what is derived from fits: speed-up, crossings,
best ratio, E, extrapolation, the plateau, the rectified law's D_l and its comparison with the
data law, the identification table. Imports `fitting`, `data` and `core`."""
