/* virt: not written yet */
