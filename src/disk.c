/* disk: not written yet */
