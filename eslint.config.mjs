// The portal's ES modules run in the browser as they are (no build step): eslint's recommended rules, with the
// browser's globals, catch an undefined or unused name before a user does.
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    files: ["federation/web/static/**/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: globals.browser },
    rules: { "no-unused-vars": ["error", { args: "after-used", argsIgnorePattern: "^_" }] },
  },
];
