/* image: not written yet */
