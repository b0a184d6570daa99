/* api: not written yet */
