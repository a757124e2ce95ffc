// Sign-in: user name and password, then (when the server answers MFARequired) the authenticator code.

import * as api from './api.js';
import { h, field, input, errorBox, fill } from './ui.js';

export async function signinPage(ctx) {
  const errors = h('div', { id: 'signin-errors' });
  const user = input('userName', { autocomplete: 'username', required: true, id: 'signin-user' });
  const pass = input('password', { type: 'password', autocomplete: 'current-password', required: true, id: 'signin-password' });
  const code = input('mfaCode', { inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: '6', id: 'signin-mfa' });
  const mfaField = field('Authenticator code', code, 'The 6-digit code your authenticator app shows for Ferry.');
  mfaField.hidden = true;
  const submit = h('button', { type: 'submit', class: 'primary', id: 'signin-submit' }, 'Sign in');
  const form = h(
    'form',
    { class: 'card', novalidate: true },
    field('RAM user name', user),
    field('Password', pass),
    mfaField,
    errors,
    submit,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    fill(errors);
    if (!user.value || !pass.value) {
      fill(errors, h('p', { class: 'error-box', role: 'alert' }, 'Enter your user name and password.'));
      return;
    }
    submit.disabled = true;
    try {
      const me = await api.signIn(user.value.trim(), pass.value, mfaField.hidden ? '' : code.value.trim());
      ctx.onSignedIn(me);
    } catch (e) {
      if (e.code === 'MFARequired') {
        mfaField.hidden = false;
        fill(errors, h('p', { class: 'notice tone-info', role: 'status' }, 'This account uses multi-factor authentication: enter the code from your authenticator app.'));
        code.focus();
      } else {
        fill(errors, errorBox(e, 'Sign-in failed'));
        if (e.code === 'InvalidMFACode') {
          code.value = '';
          code.focus();
        }
      }
    } finally {
      submit.disabled = false;
    }
  });
  setTimeout(() => user.focus(), 0);
  return h(
    'div',
    { class: 'signin' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Sign in to Ferry'),
    h('p', { class: 'muted' }, 'Use your RAM user. An administrator gives you a password (and binds an MFA device) on the RAM users page.'),
    form,
  );
}
