/* route: not written yet */
