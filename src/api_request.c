/* api_request: not written yet */
