// Preferences of every fresh kiosk profile (the legba image's Firefox).

// No first-run, welcome, default-browser or what's-new pages.
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("browser.aboutwelcome.enabled", false);
user_pref("startup.homepage_welcome_url", "");
user_pref("startup.homepage_welcome_url.additional", "");
user_pref("trailhead.firstrun.didSeeAboutWelcome", true);
user_pref("browser.startup.upgradeDialog.enabled", false);
user_pref("browser.rights.3.shown", true);
user_pref("datareporting.policy.firstRunURL", "");
user_pref("browser.uitour.enabled", false);

// No telemetry, studies or crash reports.
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("toolkit.telemetry.archive.enabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("app.normandy.enabled", false);
user_pref("app.shield.optoutstudies.enabled", false);
user_pref("browser.tabs.crashReporting.sendReport", false);

// No updates of the browser or add-ons, and no background traffic.
user_pref("app.update.auto", false);
user_pref("app.update.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("network.prefetch-next", false);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.predictor.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.downloads.remote.enabled", false);
user_pref("browser.newtabpage.enabled", false);
user_pref("browser.newtabpage.activity-stream.feeds.topsites", false);
user_pref("browser.newtabpage.activity-stream.feeds.section.topstories", false);
user_pref("browser.discovery.enabled", false);
user_pref("extensions.pocket.enabled", false);
user_pref("identity.fxaccounts.enabled", false);
user_pref("browser.translations.enable", false);
user_pref("messaging-system.rsexperimentloader.enabled", false);

// Less work before the browser is idle: WebDriver BiDi answers session.new
// only after Firefox's idle startup tasks, which under TCG take most of a
// minute; the preloaded new-tab page is the largest of them.
user_pref("browser.newtab.preload", false);
user_pref("browser.region.update.enabled", false);
user_pref("browser.region.network.url", "");
user_pref("browser.topsites.contile.enabled", false);
user_pref("browser.urlbar.quicksuggest.enabled", false);
user_pref("browser.ml.enable", false);
user_pref("extensions.screenshots.disabled", true);
user_pref("browser.tabs.unloadOnLowMemory", false);
user_pref("network.trr.mode", 5);
user_pref("doh-rollout.disable-heuristics", true);
user_pref("media.gmp-manager.updateEnabled", false);
user_pref("browser.pagethumbnails.capturing_disabled", true);
user_pref("browser.search.update", false);
user_pref("browser.search.suggest.enabled", false);
// No URL bar to suggest from, and a profile that lives for one session.
user_pref("places.history.enabled", false);

// A kiosk that restarts after a crash starts clean, without prompts.
user_pref("browser.sessionstore.resume_from_crash", false);
user_pref("toolkit.startup.max_resumed_crashes", -1);
user_pref("browser.tabs.warnOnClose", false);

// No GPU in the VM: WebRender in software, no spare content process.
user_pref("gfx.webrender.software", true);
user_pref("media.hardware-video-decoding.enabled", false);
user_pref("dom.ipc.processPrelaunch.enabled", false);

// The remote agent serves the legba agent only; it must not change the
// browsing behaviour (WebDriver's "recommended" automation prefs).
user_pref("remote.prefs.recommended", false);
