"""Warp, imported once and quietly (no greeting or module-load lines on stdout)."""
import warp as wp

wp.config.log_level = wp.LOG_WARNING
wp.init()
