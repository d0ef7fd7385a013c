"""The real Franka station (paper appendix A): franky-control arms, RealSense cameras, safety first.

Built so far (library only; the `--backend real` commands come with the rest of the station): the station
configuration, the safety layer every command passes through, and the franky arm driver.
"""
