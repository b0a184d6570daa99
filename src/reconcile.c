/* reconcile: not written yet */
