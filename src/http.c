/* http: not written yet */
